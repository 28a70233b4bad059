"""AMI pipeline throughput: this project vs panoramisk's bare message parser.

Workload: every recorded Asterisk 22 AMI session in
``tests/fixtures/ami-traces/asterisk-22/*.ami``.

(a) panoramisk 1.4: ``panoramisk.message.Message.from_line(text)`` over the
    text of each frame, decoded beforehand the way panoramisk's protocol does
    it (``bytes.decode('utf-8', 'ignore')``, split on the blank line, strip) --
    only the parse is timed, no framing, no decoding, no state;
(b) this project: ``FrameReader.feed`` over the raw bytes in the recorded
    socket-read boundaries (``.ami.chunks``), ``Normaliser`` on every frame,
    ``CallTracker.apply`` on every event -- framing, decoding, parsing,
    normalising and call tracking (``CallTracker``);
(c) as (b) plus ``CallFlow.feed`` on every modelled event, as
    ``cti.pipeline.CallPipeline`` runs both (printed as an extra figure; the
    headline stays (b), the measure the foundation issue defined).

Several rounds; each round times both sides over the whole corpus ``--repeat``
times; figures are the median per round.  The last line is
``ami_pipeline_vs_panoramisk=<ratio>`` (project events/s ÷ panoramisk events/s;
above 1 means the project is faster).  Not a timed test: run it by hand.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cti.callflow import CallFlow  # noqa: E402
from cti.events import UnknownEvent  # noqa: E402
from cti.frame import FrameReader  # noqa: E402
from cti.normalise import Normaliser  # noqa: E402
from cti.tracker import CallTracker  # noqa: E402

TRACES = ROOT / "tests" / "fixtures" / "ami-traces" / "asterisk-22"


def load_chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    chunks_file = path.with_name(path.name + ".chunks")
    if not chunks_file.exists():
        return [data]
    out = []
    for line in chunks_file.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        _t, off, length = line.split()
        out.append(data[int(off): int(off) + int(length)])
    assert b"".join(out) == data, path
    return out


def panoramisk_texts(data: bytes) -> list[str]:
    """Frame texts as panoramisk's AMIProtocol.data_received makes them."""
    text = data.decode("utf-8", "ignore")
    if text.startswith("Asterisk Call Manager/"):
        text = text.partition("\r\n")[2]
    parts = text.split("\r\n\r\n")
    return [p.strip() for p in parts if p.strip()]


def run_project(sessions: list[list[bytes]]) -> int:
    n = 0
    for chunks in sessions:
        reader = FrameReader()
        normalise = Normaliser()
        tracker = CallTracker()
        apply = tracker.apply
        feed = reader.feed
        t = 0.0
        for chunk in chunks:
            for frame in feed(chunk):
                n += 1
                apply(normalise(frame, t))
    return n


def run_project_with_callflow(sessions: list[list[bytes]]) -> int:
    """(c): what CallPipeline.process does per frame, minus the handlers."""
    n = 0
    for chunks in sessions:
        reader = FrameReader()
        normalise = Normaliser()
        apply = CallTracker().apply
        flow = CallFlow().feed
        feed = reader.feed
        t = 0.0
        for chunk in chunks:
            for frame in feed(chunk):
                n += 1
                ev = normalise(frame, t)
                if ev is None or ev.__class__ is UnknownEvent:
                    continue
                apply(ev)
                flow(ev)
    return n


def run_panoramisk(texts: list[str], from_line) -> int:
    n = 0
    for text in texts:
        if from_line(text) is not None:
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=20, help="corpus passes per round")
    args = ap.parse_args(argv)

    from panoramisk.message import Message  # adapter-side dependency, bench only

    paths = sorted(TRACES.glob("*.ami"))
    sessions = [load_chunks(p) for p in paths]
    texts = [t for p in paths for t in panoramisk_texts(p.read_bytes())]
    frames = run_project(sessions)
    parsed = run_panoramisk(texts, Message.from_line)
    total_bytes = sum(p.stat().st_size for p in paths)
    print(f"corpus: {len(paths)} sessions, {total_bytes} bytes, "
          f"{frames} frames (project), {len(texts)} texts / {parsed} messages (panoramisk)")

    # Interleave single corpus passes (alternating which side goes first) so
    # that both sides see the same machine load; the headline is the median of
    # the per-pair ratios (the machines here are noisy: other processes come
    # and go between passes).
    ours: list[float] = []
    ours_flow: list[float] = []
    theirs: list[float] = []
    pairs = args.rounds * args.repeat
    runners = [
        (theirs, lambda: run_panoramisk(texts, Message.from_line)),
        (ours, lambda: run_project(sessions)),
        (ours_flow, lambda: run_project_with_callflow(sessions)),
    ]
    gc.collect()
    for i in range(pairs):
        order = runners if i % 2 == 0 else runners[::-1]
        for sink, fn in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)

    pano_s = statistics.median(theirs)
    ours_s = statistics.median(ours)
    flow_s = statistics.median(ours_flow)
    pano_eps = len(texts) / pano_s
    ours_eps = frames / ours_s
    flow_eps = frames / flow_s
    per_text = len(texts)
    ratio = statistics.median((frames / o) / (per_text / t) for o, t in zip(ours, theirs))
    ratio_flow = statistics.median((frames / o) / (per_text / t) for o, t in zip(ours_flow, theirs))
    print(f"passes={pairs} per side, interleaved (median seconds per corpus pass)")
    print(f"panoramisk Message.from_line     : {pano_s * 1e3:8.2f} ms  {pano_eps:12,.0f} events/s")
    print(f"project feed+normalise+track     : {ours_s * 1e3:8.2f} ms  {ours_eps:12,.0f} events/s")
    print(f"  ... + CallFlow (the pipeline)  : {flow_s * 1e3:8.2f} ms  {flow_eps:12,.0f} events/s")
    print(f"ami_pipeline_with_callflow_vs_panoramisk={ratio_flow:.2f}")
    print(f"ami_pipeline_vs_panoramisk={ratio:.2f}")


if __name__ == "__main__":
    main()
