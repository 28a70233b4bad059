"""Prompts: real espeak-ng Mandarin through pyttsx3 -> pydub -> 8 kHz mono 16-bit WAV."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ivr.menu import load_menu
from ivr.tts import (PromptStore, TtsError, _run, check_wav, speakable, store_for_menu,
                     synthesize_espeak_cli, synthesize_pyttsx3)

MENU = load_menu()
GREETING = MENU.prompt("greeting")


def assert_telephony_wav(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000
        assert w.getnchannels() == 1
        assert w.getsampwidth() == 2
        assert w.getcomptype() == "NONE"
        seconds = w.getnframes() / w.getframerate()
    assert seconds > 0.3
    return seconds


def counting(engine):
    calls = []

    async def wrapped(text, out, voice, rate, timeout):
        calls.append(text)
        await engine(text, out, voice, rate, timeout)
    wrapped.calls = calls  # type: ignore[attr-defined]
    wrapped.__name__ = engine.__name__
    return wrapped


async def test_real_prompt_is_8khz_mono_16bit(tmp_path):
    store = PromptStore(tmp_path)
    pf = await store.ensure(GREETING)
    assert not pf.cached and not pf.fallback
    assert pf.path.parent == tmp_path and pf.path.suffix == ".wav"
    assert pf.playback == str(tmp_path / pf.path.stem)          # STREAM FILE wants no extension
    seconds = assert_telephony_wav(pf.path)
    assert abs(seconds - pf.duration) < 0.01 and seconds < 30
    assert [p.name for p in tmp_path.iterdir()] == [pf.path.name]   # no temporary files left


@pytest.mark.parametrize("engine", [synthesize_pyttsx3, synthesize_espeak_cli])
async def test_each_engine_alone_produces_a_valid_prompt(tmp_path, engine):
    store = PromptStore(tmp_path, engines=[engine])
    pf = await store.ensure("故障报修请按1。")
    assert_telephony_wav(pf.path)


async def test_cache_hit_does_not_regenerate(tmp_path):
    engine = counting(synthesize_pyttsx3)
    store = PromptStore(tmp_path, engines=[engine])
    first = await store.ensure(GREETING)
    mtime = first.path.stat().st_mtime_ns
    second = await store.ensure(GREETING)
    assert second.cached and second.path == first.path
    # a new process (new store) on the same directory: still cached
    again = await PromptStore(tmp_path, engines=[engine]).ensure(GREETING)
    assert again.cached
    assert engine.calls == [speakable(GREETING)]
    assert first.path.stat().st_mtime_ns == mtime
    assert store.status.generated == 1 and store.status.cache_hits == 1
    # the key covers voice and rate
    other = PromptStore(tmp_path, engines=[engine], rate=120)
    assert other.path_for(GREETING) != store.path_for(GREETING)


async def test_concurrent_requests_for_one_text_generate_once(tmp_path):
    engine = counting(synthesize_pyttsx3)
    store = PromptStore(tmp_path, engines=[engine])
    results = await asyncio.gather(*(store.ensure("咨询查询请按3。") for _ in range(5)))
    assert len({r.path for r in results}) == 1
    assert len(engine.calls) == 1


async def test_a_broken_file_in_the_cache_is_regenerated(tmp_path):
    store = PromptStore(tmp_path)
    store.path_for(GREETING).write_bytes(b"RIFF....garbage")
    pf = await store.ensure(GREETING)
    assert not pf.cached
    assert_telephony_wav(pf.path)


def test_speakable_reads_numbers_like_a_person():
    assert speakable("欢迎致电966022热线") == "欢迎致电9 6 6 0 2 2热线"
    assert speakable("预计14:30恢复供电，18:00前") == "预计14点30分恢复供电，18点整前"
    assert speakable("按1，10千伏") == "按1，10千伏"


def test_default_voice_reads_hanzi_as_mandarin_not_english():
    """Why the default voice is cmn-latn-pinyin (espeak-ng 1.51, Debian 12)."""
    phon = subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-q", "-x", "供电服务热线"],
                          capture_output=True, text=True, check=True).stdout
    assert "(en)" not in phon


async def test_pyttsx3_bad_voice_fails_instead_of_speaking_english(tmp_path):
    store = PromptStore(tmp_path, voice="zh-no-such-voice", engines=["pyttsx3"])
    with pytest.raises(TtsError, match="voice"):
        await store.ensure(GREETING)
    assert not list(tmp_path.glob("tts-*.wav"))


async def test_hung_synthesis_is_killed_after_timeout():
    t0 = time.monotonic()
    with pytest.raises(TtsError, match="killed"):
        await _run(["sleep", "30"], stdin=b"", timeout=0.3, what="sleep")
    assert time.monotonic() - t0 < 5


async def test_tts_failure_plays_generic_announcement_and_is_recorded(tmp_path):
    # the generic announcement was pre-built (build-prompts) ...
    await store_for_menu(MENU, tmp_path).ensure(MENU.prompt("outage_generic"))

    # ... later TTS breaks
    async def broken(text, out, voice, rate, timeout):
        raise TtsError("espeak-ng: segmentation fault")

    store = store_for_menu(MENU, tmp_path, engines=[broken])
    with capture_logs() as logs:
        pf = await store.prepare_announcement("城关线故障停电，预计18点恢复供电。")
    assert pf.fallback and pf.path == store.path_for(MENU.prompt("outage_generic"))
    assert_telephony_wav(pf.path)
    assert await store.playback("另一条停电公告", kind="announcement") == pf.playback
    assert len(store.status.failures) == 2 and not store.status.healthy
    f = store.status.to_dict()["failures"][0]
    assert f["kind"] == "announcement" and "segmentation fault" in f["error"]
    assert f["text"].startswith("城关线") and f["fallback"] == pf.playback
    failed = [e for e in logs if e["event"] == "tts_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"


async def test_tts_failure_without_generic_plays_a_tone(tmp_path):
    async def broken(text, out, voice, rate, timeout):
        raise TtsError("no voice")

    store = store_for_menu(MENU, tmp_path, engines=[broken])
    pf = await store.prompt_or_fallback(MENU.prompt("menu"))
    assert pf.fallback and pf.path.name == "fallback-tone.wav"
    assert_telephony_wav(pf.path)
    assert store.status.failures[0].kind == "static"


async def test_engine_chain_falls_through_to_next_engine(tmp_path):
    async def broken(text, out, voice, rate, timeout):
        raise TtsError("first engine down")

    store = PromptStore(tmp_path, engines=[broken, synthesize_espeak_cli])
    pf = await store.ensure("投诉举报请按2。")
    assert not pf.fallback and store.status.engine_errors == 1 and store.status.healthy
    assert_telephony_wav(pf.path)


async def test_outage_announcement_is_playable_within_seconds_of_publish(tmp_path):
    store = store_for_menu(MENU, tmp_path)
    text = ("您好，您所在的城关镇东街台区因10千伏城关线故障停电，停电时间11月22日14:30起，"
            "抢修人员已经在处理，预计今天18:00恢复供电。给您带来不便，敬请谅解。")
    t0 = time.monotonic()
    pf = await store.prepare_announcement(text)
    elapsed = time.monotonic() - t0
    print(f"\noutage announcement publish->playable: {elapsed * 1000:.0f} ms "
          f"({pf.duration:.1f} s of audio)")
    assert not pf.fallback
    assert_telephony_wav(pf.path)
    assert check_wav(pf.path) == pf.duration
    assert elapsed < 10
    # the IVR then plays it from the cache at once
    t1 = time.monotonic()
    assert await store.playback(text, kind="announcement") == pf.playback
    assert time.monotonic() - t1 < 0.1


def test_build_prompts_command(tmp_path):
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "ivr", "build-prompts", "--sounds-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = dict(line.split("\t") for line in r.stdout.splitlines())
    assert set(listed) == set(MENU.prompts)
    for path in listed.values():
        assert_telephony_wav(Path(path))
    n = len(MENU.prompts)
    assert f"{n}/{n}" in r.stderr       # the progress bar
    assert (tmp_path / "fallback-tone.wav").exists()
    r2 = subprocess.run([sys.executable, "-m", "ivr", "build-prompts", "--sounds-dir", str(tmp_path)],
                        capture_output=True, text=True, cwd=root, timeout=120)
    assert r2.returncode == 0 and "(cached)" in r2.stderr
