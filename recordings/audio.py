"""Recording files: check a WAV (duration, size, SHA-256), make the compact
copy (pydub → ffmpeg), verify it by decoding it back.  Blocking functions;
callers run them in an executor.

Errors are :class:`RecordingFileError` with a ``kind`` (``missing``,
``empty``, ``corrupt``, ``disk_full``, ``encode_failed``, ``verify_failed``)
and one clear message; nothing here deletes an original."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# the compact formats: (ffmpeg format, codec, bitrate, file suffix, HTTP content type)
COMPACT_FORMATS = {
    "opus": ("ogg", "libopus", "16k", ".opus", "audio/ogg"),
    "mp3": ("mp3", "libmp3lame", "24k", ".mp3", "audio/mpeg"),
}
CONTENT_TYPES = {".wav": "audio/wav", ".opus": "audio/ogg", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}
WAV_HEADER_MIN = 44


class RecordingFileError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class WavInfo:
    duration_s: float
    size_bytes: int
    sha256: str
    format: str            # "wav/pcm_s16le/8000/1"
    header_complete: bool  # the RIFF/data sizes match the file (False while Asterisk still writes)


@dataclass(frozen=True, slots=True)
class _Riff:
    channels: int
    rate: int
    width: int          # bytes per sample
    data_offset: int
    data_declared: int
    riff_declared: int


def _parse_riff(f) -> _Riff:
    """The ``fmt `` and ``data`` chunks of a RIFF/WAVE file.  Tolerates the
    zero sizes of a header Asterisk has not finalised yet (the ``data``
    chunk then runs to the end of the file)."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise RecordingFileError("corrupt", "不是 WAV 文件 / not a RIFF/WAVE file")
    riff_size = struct.unpack("<I", head[4:8])[0]
    fmt = None
    pos = 12
    for _ in range(64):
        hdr = f.read(8)
        if len(hdr) < 8:
            break
        cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        pos += 8
        if cid == b"fmt ":
            body = f.read(min(size, 64))
            if len(body) < 16:
                raise RecordingFileError("corrupt", "WAV 格式块损坏 / truncated WAV fmt chunk")
            tag, channels, rate, _bps, _align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag not in (1, 0xFFFE):  # PCM (MixMonitor .wav); WAVE_FORMAT_EXTENSIBLE
                raise RecordingFileError("corrupt", f"不支持的 WAV 编码 / unsupported WAV encoding {tag:#x}")
            fmt = (channels, rate, (bits + 7) // 8)
        elif cid == b"data":
            if fmt is None:
                raise RecordingFileError("corrupt", "WAV 缺少格式块 / WAV data before its fmt chunk")
            channels, rate, width = fmt
            if channels < 1 or rate < 1 or width < 1:
                raise RecordingFileError("corrupt", "WAV 格式参数无效 / bad WAV format fields")
            return _Riff(channels, rate, width, pos, size, riff_size)
        pos += size + (size & 1)
        f.seek(pos)
    raise RecordingFileError("corrupt", "WAV 文件没有音频数据块 / WAV file has no data chunk")


def probe_open_wav(f, *, chunk: int = 1 << 20) -> WavInfo:
    """Check that ``f`` (a file open for reading, binary) is a readable PCM
    WAV; duration from the audio actually present (a header Asterisk has
    not finalised yet says 0 bytes).  The recordings service opens it
    (recordings.service.open_beneath: no symbolic link below the root)."""
    try:
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise RecordingFileError("missing", f"录音文件无法读取 / cannot read recording file: {exc.strerror}") from None
    if size == 0:
        raise RecordingFileError("empty", "录音文件为空 (0 字节) / recording file is empty (0 bytes)")
    if size < WAV_HEADER_MIN:
        raise RecordingFileError("corrupt", f"录音文件过短 ({size} 字节) / recording file truncated ({size} bytes)")
    h = hashlib.sha256()
    try:
        riff = _parse_riff(f)
        f.seek(0)
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    except RecordingFileError:
        raise
    except OSError as exc:
        raise RecordingFileError("missing", f"录音文件无法读取 / cannot read recording file: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - struct errors and the like: a corrupt file
        raise RecordingFileError("corrupt", f"录音文件损坏 / corrupt WAV: {type(exc).__name__} {exc}") from None
    present = max(0, size - riff.data_offset)
    frame_bytes = riff.channels * riff.width
    declared = riff.data_declared
    usable = min(declared, present) if declared else present
    complete = 0 < declared <= present and riff.riff_declared > 0
    if usable < frame_bytes:
        raise RecordingFileError("corrupt", "WAV 文件没有音频 / WAV file holds no audio")
    fmt = (f"wav/pcm_s{8 * riff.width}le/{riff.rate}/{riff.channels}" if riff.width > 1
           else f"wav/pcm_u8/{riff.rate}/{riff.channels}")
    return WavInfo((usable // frame_bytes) / riff.rate, size, h.hexdigest(), fmt, complete)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- the compact copy -------------------------------------------------------

Writer = Callable[[Path, Path, str], None]


def pydub_writer(src: Path, dst: Path, fmt: str) -> None:
    """Encode ``src`` (WAV) into ``dst`` with ffmpeg through pydub."""
    from pydub import AudioSegment
    from pydub.exceptions import CouldntEncodeError

    ff_format, codec, bitrate, _suffix, _ctype = COMPACT_FORMATS[fmt]
    seg = AudioSegment.from_wav(str(src))
    try:
        seg.export(str(dst), format=ff_format, codec=codec, bitrate=bitrate)
    except CouldntEncodeError as exc:
        # ffmpeg reports a full disk as a failed write, not as an OSError
        if "No space left" in str(exc) or _disk_nearly_full(dst.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst)) from exc
        raise RecordingFileError("encode_failed", f"压缩失败 / ffmpeg could not encode: {str(exc)[-300:]}") from exc


def _disk_nearly_full(directory: Path, reserve: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(directory).free < reserve
    except OSError:
        return False


def decoded_duration(path: Path) -> float:
    from pydub import AudioSegment

    return len(AudioSegment.from_file(str(path))) / 1000.0


def tolerance_for(duration_s: float) -> float:
    """Allowed difference between the original and the decoded copy."""
    return max(0.25, duration_s * 0.01)


@dataclass(frozen=True, slots=True)
class CompactCopy:
    path: Path
    size_bytes: int
    sha256: str
    duration_s: float
    format: str


def make_compact_copy(src: Path, dst: Path, fmt: str, expected_duration_s: float, *,
                      writer: Writer = pydub_writer,
                      decoder: Callable[[Path], float] = decoded_duration) -> CompactCopy:
    """Write ``dst`` through a temporary name, decode it back and compare
    durations; only a verified copy ends up at ``dst``.  Raises
    :class:`RecordingFileError` (``disk_full``, ``encode_failed``,
    ``verify_failed``, ``missing``); a partial file is removed."""
    if fmt not in COMPACT_FORMATS:
        raise RecordingFileError("encode_failed", f"unknown compact format {fmt!r}")
    if not src.is_file():
        raise RecordingFileError("missing", f"原始录音不存在 / original not found: {src.name}")
    tmp = dst.with_name("." + dst.name + ".part")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        writer(src, tmp, fmt)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RecordingFileError("encode_failed", "压缩文件为空 / encoder wrote nothing")
        try:
            got = decoder(tmp)
        except Exception as exc:  # noqa: BLE001 - any decode failure means "not verified"
            raise RecordingFileError("verify_failed", f"压缩文件无法解码 / copy does not decode: {exc}") from None
        if abs(got - expected_duration_s) > tolerance_for(expected_duration_s):
            raise RecordingFileError(
                "verify_failed", f"压缩文件时长不符 / copy lasts {got:.2f}s, original {expected_duration_s:.2f}s")
        os.replace(tmp, dst)
    except OSError as exc:
        _unlink_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RecordingFileError("disk_full", f"磁盘已满,原始录音保留 / disk full, original kept: {exc}") from None
        raise RecordingFileError("encode_failed", f"写入压缩文件失败 / cannot write copy: {exc}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return CompactCopy(dst, dst.stat().st_size, sha256_file(dst), got, fmt)


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def write_tone_wav(path: str | os.PathLike[str], seconds: float, *, rate: int = 8000,
                   freq: float = 440.0, amplitude: int = 6000) -> Path:
    """A 16-bit mono tone (simulator and tests: what MixMonitor would write)."""
    import array
    import math

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    period = array.array("h", (int(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(rate)))
    n = int(round(seconds * rate))
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        full, rest = divmod(n, rate)
        for _ in range(full):
            w.writeframes(period.tobytes())
        if rest:
            w.writeframes(period[:rest].tobytes())
    return p
