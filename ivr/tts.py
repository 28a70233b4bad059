"""Mandarin prompts: pyttsx3 (espeak-ng Mandarin voice) -> pydub -> 8 kHz mono
16-bit WAV, the format Asterisk plays without transcoding.

The voice is ``cmn-latn-pinyin``, not ``cmn``: with Debian 12's espeak-ng 1.51
the ``cmn`` voice ("latin as English") turns most hanzi into pinyin and then
reads that pinyin as *English* (``espeak-ng -v cmn -x 电`` gives
``(en)daI55;'a55nf'o@55``, "dian-four"); ``cmn-latn-pinyin`` reads the same
text as Mandarin (``t'iE51n``).  Text is made speakable first
(:func:`speakable`): digit runs of 5+ (phone and account numbers, "966022")
are read digit by digit instead of as a quantity, ``14:30`` becomes ``14点30分``.

* Cached by content hash: ``<sounds_dir>/tts-<sha256(text, voice, rate, format)[:20]>.wav``;
  a prompt already on disk (and valid) is never regenerated.
* Files are written to a temporary name and renamed, so Asterisk never opens
  a half-written prompt; every file is checked (8 kHz, mono, 16-bit,
  0.3 s < duration < 120 s) before it is used.
* If generation fails, an outage announcement falls back to the generic
  pre-built announcement (``prompts.outage_generic``), any other prompt to a
  short tone; the failure is logged (``tts_failed``) and kept in
  :class:`TtsStatus` for the supervisors' page.

pyttsx3 2.99 with the espeak driver, as found here (see ``_worker_main``):

1. ``runAndWait()`` returns *before* the file is written: espeak synthesises in
   its own thread (``AUDIO_OUTPUT_RETRIEVAL``) and the driver's loop ends as soon
   as its command queue is pumped.  Measured: the first ``save_to_file`` of a
   process leaves no file at all; the next ``runAndWait`` then writes the
   *previous* utterance into the *new* file name (wrong audio under the right
   name).  Fix: wait for the ``finished-utterance`` notification.
2. Errors are not raised: ``setProperty('voice', 'zh')`` fails with
   ``EE_INTERNAL_ERROR`` inside the queue, is only sent to ``error`` listeners,
   and synthesis then goes on with the *English* voice.  Fix: listen to
   ``error`` and fail the job.
3. espeak is initialised once per process with a process-global synth
   callback, it prints to stdout, and it is not thread-safe -- so every job runs
   in its own short-lived subprocess (``python -m ivr.tts synth``, ~0.15 s
   start-up), with a timeout after which it is killed.  Nothing blocks the
   asyncio loop, a hang cannot leak into the service.
4. Voice ids are espeak identifiers lower-cased (``sit/cmn-latn-pinyin``);
   ``cmn-latn-pinyin`` is resolved to that from the voice list.

If pyttsx3 fails, the espeak-ng command line is tried next (``engines``), then
the fallback above.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import os
import re
import struct
import sys
import time
import uuid
import wave
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

__all__ = [
    "FORMAT", "TtsError", "PromptFile", "TtsFailure", "TtsStatus", "PromptStore",
    "DEFAULT_VOICE", "outage_prompt_hook", "store_for_menu", "check_wav", "prompt_key", "speakable", "synthesize_pyttsx3", "synthesize_espeak_cli",
]

FORMAT = "wav-8000-mono-s16/speakable-1"   # part of the cache key: change it, regenerate all
DEFAULT_VOICE = "cmn-latn-pinyin"
SAMPLE_RATE = 8000
MIN_SECONDS = 0.3
MAX_SECONDS = 120.0
MAX_TEXT_CHARS = 2000
_ROOT = Path(__file__).resolve().parent.parent

Engine = Callable[[str, Path, str, int, float], Awaitable[None]]


class TtsError(RuntimeError):
    """A prompt could not be generated (the message says why)."""


@dataclass(frozen=True, slots=True)
class PromptFile:
    path: Path            # the .wav on disk
    playback: str         # what STREAM FILE / GET DATA take: the path without extension
    duration: float       # seconds
    cached: bool = False  # already on disk, not generated now
    fallback: bool = False
    error: str = ""       # why the fallback is played


@dataclass(frozen=True, slots=True)
class TtsFailure:
    at: str
    kind: str             # static / announcement
    text: str             # first 80 characters
    error: str
    fallback: str         # the playback used instead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TtsStatus:
    """What supervisors see: generated / cached counts and recent failures."""

    generated: int = 0
    cache_hits: int = 0
    engine_errors: int = 0
    last_engine_error: str = ""
    failures: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    @property
    def healthy(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "generated": self.generated,
            "cache_hits": self.cache_hits,
            "engine_errors": self.engine_errors,
            "last_engine_error": self.last_engine_error,
            "failures": [f.to_dict() for f in self.failures],
        }


def _log():
    from cti.logs import get_logger
    return get_logger("ivr.tts")


_CLOCK = re.compile(r"(?<![0-9])([01]?[0-9]|2[0-3])[:：]([0-5][0-9])(?![0-9])")
_LONG_DIGITS = re.compile(r"[0-9]{5,}")


def speakable(text: str) -> str:
    """Text as the Mandarin voice should read it: ``14:30`` -> ``14点30分``
    (``14:00`` -> ``14点整``), digit runs of 5+ digit by digit (``966022`` ->
    ``9 6 6 0 2 2``)."""
    def clock(m: re.Match[str]) -> str:
        h, mi = int(m.group(1)), int(m.group(2))
        return f"{h}点整" if mi == 0 else f"{h}点{mi}分"
    text = _CLOCK.sub(clock, text)
    return _LONG_DIGITS.sub(lambda m: " ".join(m.group(0)), text)


def prompt_key(text: str, voice: str, rate: int) -> str:
    h = hashlib.sha256()
    for part in (FORMAT, voice, str(rate), text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def check_wav(path: str | Path, *, min_seconds: float = MIN_SECONDS,
              max_seconds: float = MAX_SECONDS) -> float:
    """Duration of an 8 kHz mono 16-bit PCM WAV; :class:`TtsError` if it is not one
    or its duration is not sane."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
    except (OSError, EOFError, wave.Error) as e:
        raise TtsError(f"{path}: not a readable WAV ({e})") from None
    if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
        raise TtsError(f"{path}: {rate} Hz, {channels} channel(s), {8 * width}-bit (want 8000 Hz mono 16-bit)")
    seconds = frames / rate
    if not min_seconds < seconds < max_seconds:
        raise TtsError(f"{path}: duration {seconds:.2f} s outside {min_seconds}..{max_seconds} s")
    return seconds


# -- engines: each writes a WAV (any rate) of `text` to `out` or raises TtsError --

async def _run(argv: Sequence[str], *, stdin: bytes, timeout: float, what: str,
               cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    except OSError as e:
        raise TtsError(f"{what}: cannot start: {e}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as e:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        raise TtsError(f"{what}: no result after {timeout:.1f} s, killed") from None
    if proc.returncode != 0:
        tail = (err or out).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise TtsError(f"{what}: exit {proc.returncode}: {tail[0][:300]}")


async def synthesize_pyttsx3(text: str, out: Path, voice: str, rate: int, timeout: float) -> None:
    """pyttsx3 (espeak driver) in a subprocess: ``python -m ivr.tts synth``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
    await _run([sys.executable, "-m", "ivr.tts", "synth", "--voice", voice, "--rate", str(rate),
                "--out", str(out), "--timeout", str(timeout)],
               stdin=text.encode("utf-8"), timeout=timeout, what="pyttsx3", cwd=_ROOT, env=env)
    if not out.exists() or out.stat().st_size <= 44:
        raise TtsError("pyttsx3: finished without writing the file")


async def synthesize_espeak_cli(text: str, out: Path, voice: str, rate: int, timeout: float) -> None:
    """The espeak-ng command line (the fallback engine)."""
    await _run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(out), "--stdin"],
               stdin=text.encode("utf-8"), timeout=timeout, what="espeak-ng")
    if not out.exists() or out.stat().st_size <= 44:
        raise TtsError("espeak-ng: finished without writing the file")


ENGINES: dict[str, Engine] = {"pyttsx3": synthesize_pyttsx3, "espeak-ng": synthesize_espeak_cli}


def _to_telephony(src: Path, dst: Path) -> None:
    """pydub: any WAV -> 8 kHz mono 16-bit PCM WAV."""
    from pydub import AudioSegment

    seg = AudioSegment.from_wav(str(src))
    seg = seg.set_channels(1).set_sample_width(2).set_frame_rate(SAMPLE_RATE)
    seg.export(str(dst), format="wav")


def _write_tone(dst: Path, seconds: float = 0.6) -> None:
    """A short soft tone: the prompt of last resort (needs no TTS at all)."""
    n = int(SAMPLE_RATE * seconds)
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)
                              * min(1.0, i / 400, (n - i) / 400)))
        for i in range(n))
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(frames)


# -- the store ------------------------------------------------------------------

class PromptStore:
    """Generates, caches and hands out prompt files.

    ``sounds_dir``: where the files are written (production:
    ``/var/lib/asterisk/sounds/hotline``).  ``asterisk_dir``: the same
    directory as Asterisk sees it, if different (another host / container);
    playback paths use it.  ``engines``: names in :data:`ENGINES` or engine
    callables ``(text, out_path, voice, rate, timeout)``, tried in order.
    """

    def __init__(self, sounds_dir: str | Path, *, voice: str = DEFAULT_VOICE, rate: int = 150,
                 timeout: float = 10.0, engines: Iterable[str | Engine] = ("pyttsx3", "espeak-ng"),
                 generic_text: str | None = None, asterisk_dir: str | Path | None = None,
                 max_parallel: int = 2, status: TtsStatus | None = None) -> None:
        self.sounds_dir = Path(sounds_dir)
        self.asterisk_dir = Path(asterisk_dir) if asterisk_dir else self.sounds_dir
        self.voice = voice
        self.rate = int(rate)
        self.timeout = float(timeout)
        self.engines: list[tuple[str, Engine]] = []
        for e in engines:
            if isinstance(e, str):
                if e not in ENGINES:
                    raise ValueError(f"unknown TTS engine {e!r} (known: {', '.join(ENGINES)})")
                self.engines.append((e, ENGINES[e]))
            else:
                self.engines.append((getattr(e, "__name__", "engine"), e))
        self.generic_text = generic_text
        self.status = status or TtsStatus()
        self._sem = asyncio.Semaphore(max_parallel)
        self._inflight: dict[str, asyncio.Future[PromptFile]] = {}

    # paths
    def key(self, text: str) -> str:
        return prompt_key(text, self.voice, self.rate)

    def path_for(self, text: str) -> Path:
        return self.sounds_dir / f"tts-{self.key(text)}.wav"

    def _playback(self, path: Path) -> str:
        return str(self.asterisk_dir / path.stem)

    # generation
    async def ensure(self, text: str) -> PromptFile:
        """The prompt file for ``text``: from the cache, or generated now.
        Raises :class:`TtsError` when it cannot be produced."""
        text = (text or "").strip()
        if not text:
            raise TtsError("empty prompt text")
        if len(text) > MAX_TEXT_CHARS:
            raise TtsError(f"prompt text longer than {MAX_TEXT_CHARS} characters")
        path = self.path_for(text)
        try:
            seconds = check_wav(path)
        except TtsError:
            pass
        else:
            self.status.cache_hits += 1
            return PromptFile(path, self._playback(path), seconds, cached=True)
        key = path.stem
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._generate(text, path))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f, k=key: self._inflight.pop(k, None))
        return await asyncio.shield(fut)

    async def _generate(self, text: str, path: Path) -> PromptFile:
        self.sounds_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        async with self._sem:
            for name, engine in self.engines:
                tag = uuid.uuid4().hex[:8]
                raw = self.sounds_dir / f".raw-{path.stem}-{tag}.wav"
                tmp = self.sounds_dir / f".tmp-{path.stem}-{tag}.wav"
                started = time.monotonic()
                try:
                    await engine(speakable(text), raw, self.voice, self.rate, self.timeout)
                    await asyncio.to_thread(_to_telephony, raw, tmp)
                    seconds = check_wav(tmp)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)
                except Exception as e:  # noqa: BLE001 -- any engine failure: try the next
                    msg = f"{name}: {e}" if not str(e).startswith(name) else str(e)
                    errors.append(msg)
                    self.status.engine_errors += 1
                    self.status.last_engine_error = msg
                    _log().warning("tts_engine_failed", engine=name, error=msg, text=text[:80])
                    continue
                finally:
                    for p in (raw, tmp):
                        try:
                            p.unlink()
                        except FileNotFoundError:
                            pass
                self.status.generated += 1
                _log().info("tts_generated", engine=name, file=str(path), seconds=round(seconds, 2),
                            took_ms=round(1000 * (time.monotonic() - started)))
                return PromptFile(path, self._playback(path), seconds)
        raise TtsError("; ".join(errors) or "no TTS engine configured")

    # what the IVR uses: never raises
    async def playback(self, text: str, *, kind: str = "static") -> str:
        """The playback path (no extension) for a prompt; on failure the
        generic announcement (``kind='announcement'``) or the tone."""
        return (await self.prompt_or_fallback(text, kind=kind)).playback

    async def prompt_or_fallback(self, text: str, *, kind: str = "static") -> PromptFile:
        try:
            return await self.ensure(text)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            error = str(e) or type(e).__name__
        fb = replace(await self._fallback(kind), error=error[:500])
        failure = TtsFailure(at=datetime.now(timezone.utc).isoformat(timespec="seconds"), kind=kind,
                             text=(text or "")[:80], error=error[:500], fallback=fb.playback)
        self.status.failures.append(failure)
        _log().error("tts_failed", kind=kind, text=(text or "")[:80], error=error[:500],
                     fallback=fb.playback)
        return fb

    async def prepare_announcement(self, text: str) -> PromptFile:
        """Generate an outage announcement now (call it when an outage is
        published or changed): afterwards the IVR plays it from the cache."""
        return await self.prompt_or_fallback(text, kind="announcement")

    async def fallback_playback(self, kind: str = "static") -> str:
        """What to play when a prompt is not ready: the generic announcement or the tone."""
        return (await self._fallback(kind)).playback

    async def _fallback(self, kind: str) -> PromptFile:
        if kind == "announcement" and self.generic_text:
            path = self.path_for(self.generic_text)
            try:
                return PromptFile(path, self._playback(path), check_wav(path), cached=True, fallback=True)
            except TtsError:
                pass   # the generic announcement was never built (or TTS is down since start)
        return self.tone()

    def tone(self) -> PromptFile:
        path = self.sounds_dir / "fallback-tone.wav"
        try:
            seconds = check_wav(path)
        except TtsError:
            self.sounds_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.sounds_dir / f".tmp-tone-{uuid.uuid4().hex[:8]}.wav"
            _write_tone(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            seconds = check_wav(path)
        return PromptFile(path, self._playback(path), seconds, cached=True, fallback=True)

    async def build_all(self, texts: dict[str, str],
                        progress: Callable[[str, PromptFile | None, str | None], None] | None = None,
                        ) -> dict[str, PromptFile | TtsError]:
        """Build every prompt in ``texts`` (name -> text), one by one."""
        out: dict[str, PromptFile | TtsError] = {}
        for name, text in texts.items():
            try:
                pf = await self.ensure(text)
                out[name] = pf
                if progress:
                    progress(name, pf, None)
            except TtsError as e:
                out[name] = e
                if progress:
                    progress(name, None, str(e))
        self.tone()
        return out


def outage_prompt_hook(store: PromptStore, pool: Any) -> Callable[[Any], Awaitable[None]]:
    """The hook to run when an outage is published or its restoration time
    changes (``app[ivr.outage_web.outage_hooks_key].append(...)``): generate the
    announcement now, and record on the outage whether it is ready or failed
    (``prompt_status``, shown to supervisors)."""
    async def make_prompt(outage: Any) -> None:
        from ivr.outage_repo import set_prompt_state
        from ivr.outages import announcement_text

        text = getattr(outage, "announcement", "") or announcement_text(outage)
        pf = await store.prepare_announcement(text)
        async with pool.acquire() as conn:
            await set_prompt_state(conn, outage.id, announcement=text,
                                   status="failed" if pf.fallback else "ready",
                                   path=None if pf.fallback else pf.playback, error=pf.error)
    return make_prompt


def store_for_menu(menu: Any, sounds_dir: str | Path, **kw: Any) -> PromptStore:
    """A store whose fallback announcement is the menu's ``outage_generic``."""
    return PromptStore(sounds_dir, generic_text=menu.prompt("outage_generic"), **kw)


# -- the pyttsx3 worker (runs in its own process) --------------------------------

def _worker_main(argv: list[str]) -> int:
    import argparse
    import threading

    ap = argparse.ArgumentParser(prog="python -m ivr.tts synth")
    ap.add_argument("--voice", required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    text = sys.stdin.buffer.read().decode("utf-8").strip()
    if not text:
        print("empty text", file=sys.stderr)
        return 2
    # pyttsx3's espeak driver prints "Audio saved to ..." on stdout: keep the
    # pipe clean for our own messages
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    import pyttsx3

    engine = pyttsx3.init("espeak")
    errors: list[str] = []
    finished = threading.Event()
    engine.connect("error", lambda name=None, exception=None, **_: errors.append(repr(exception)))
    engine.connect("finished-utterance", lambda name=None, completed=True, **_: finished.set())
    wanted = args.voice.lower()
    voice_id = None
    for v in engine.getProperty("voices"):
        vid = (v.id or "").lower()
        if vid == wanted or vid.endswith("/" + wanted):
            voice_id = v.id
            break
    if voice_id is None:
        print(f"voice {args.voice!r} not found in espeak-ng's voice list", file=sys.stderr)
        return 3
    engine.setProperty("voice", voice_id)
    engine.setProperty("rate", args.rate)
    engine.save_to_file(text, args.out)
    engine.runAndWait()          # returns before espeak's thread has finished (see module doc)
    if not finished.wait(args.timeout):
        print("pyttsx3: no finished-utterance notification", file=sys.stderr)
        return 4
    if errors:
        print(f"pyttsx3 error: {errors[0]}", file=sys.stderr)
        return 5
    if not os.path.exists(args.out) or os.path.getsize(args.out) <= 44:
        print("pyttsx3: no audio written", file=sys.stderr)
        return 6
    real_stdout.write("ok\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "synth":
        code = _worker_main(sys.argv[2:])
        sys.stdout.flush()
        os._exit(code)   # espeak's atexit/terminate can assert; skip it
    print("usage: python -m ivr.tts synth --voice V --rate R --out FILE < text", file=sys.stderr)
    sys.exit(2)
