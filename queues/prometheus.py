"""Prometheus text exposition format (version 0.0.4), pure and stdlib only.

Small on purpose: the service exposes a few dozen series, so a renderer of
``# HELP`` / ``# TYPE`` / samples is enough and needs no client library.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> "Family":
        self.samples.append((labels, value))
        return self


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def render(families: Iterable[Family]) -> str:
    out: list[str] = []
    for fam in families:
        if not _NAME.match(fam.name):
            raise ValueError(f"bad metric name {fam.name!r}")
        if fam.kind not in ("gauge", "counter"):
            raise ValueError(f"bad metric type {fam.kind!r}")
        if fam.kind == "counter" and not fam.name.endswith("_total"):
            raise ValueError(f"counter {fam.name!r} must end in _total")
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            if labels:
                for k in labels:
                    if not _LABEL.match(k):
                        raise ValueError(f"bad label name {k!r}")
                lab = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                out.append(f"{fam.name}{{{lab}}} {_value(value)}")
            else:
                out.append(f"{fam.name} {_value(value)}")
    return "\n".join(out) + "\n"


__all__ = ["CONTENT_TYPE", "Family", "render"]
