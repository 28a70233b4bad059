"""bench/storm.py --repeat: the figures quoted are medians over runs, and a
run that failed is never a silent zero."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("storm_bench", Path(__file__).resolve().parents[1] / "bench" / "storm.py")
storm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(storm)


def run_output(p50: float, p99: float, lost: int, cpu: float = 8.0) -> str:
    return (f"screen-pop latency ms (AgentCalled written -> websocket frame received, n=10): p50 {p50}  p90 1  "
            f"p99 {p99}  max {p99 * 2}  mean 1\n"
            f"pipeline events 350 in 1.0 s = 350 events/s; service CPU 1.0 s = 50% of one core (300 us per event, "
            f"{cpu} ms per call, 35.0 events per call); PostgreSQL CPU 0.4 s\n"
            f"screenpop_p99_ms={p99}\nlost={lost}\n")


def test_the_headline_p99_is_the_median_of_the_runs_not_the_best_one():
    lines, p99, lost = storm.summarise_runs([run_output(3, 30, 0), run_output(2, 9, 0), run_output(4, 12, 0)])
    assert p99 == 12 and lost == 0
    line = next(x for x in lines if x.startswith("p99 ms"))
    assert "median    12.00" in line and "range 9–30" in line and "runs: 30  9  12" in line
    assert any(x.startswith("service ms/call") and "median     8.00" in x for x in lines)


def test_lost_calls_add_up_over_the_runs_and_a_run_that_died_counts_as_lost():
    _, _, lost = storm.summarise_runs([run_output(3, 10, 2), run_output(3, 10, 0), "Traceback ...\n"])
    assert lost == 3
    _, p99, _ = storm.summarise_runs(["Traceback ...\n"])
    assert p99 != p99  # nan: no figure from a failed run


@pytest.mark.parametrize("argv", [["--repeat", "3", "--rate", "5"], ["--rate", "5", "--repeat=3"]])
def test_repeat_runs_the_storm_without_the_repeat_flag_and_with_successive_seeds(monkeypatch, capsys, argv):
    calls = []

    class Done:
        stdout = run_output(3, 10, 0)

    monkeypatch.setattr(storm.subprocess, "run", lambda cmd, **kw: calls.append(cmd[2:]) or Done())
    monkeypatch.setattr(storm.sys, "argv", ["storm.py", *argv, "--seed", "7"])
    assert storm.main() == 0
    assert calls == [["--rate", "5", "--seed", "7"], ["--rate", "5", "--seed", "8"], ["--rate", "5", "--seed", "9"]]
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["screenpop_p99_ms=10.00", "lost=0"]
