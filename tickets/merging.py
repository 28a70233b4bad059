"""Duplicate-fault merging (并单), the pure part.  Stdlib only.

Many calls from one transformer area (台区) or feeder (线路) during one
outage are one fault, not many (DOMAIN.md, "Fault repair").  When a repair
order is accepted, the adapter collects the *known faults* covering the
caller -- open repair orders (accepted / dispatched / in progress, not
themselves attached to another fault) and published outages of the outage
registry -- and :func:`choose_fault` picks the one the caller is attached to:

1. the most specific match first: same transformer area, then village (only
   registry outages are matched by village), then same feeder;
2. at equal specificity a repair order (a crew is on the way, the agent can
   say when it arrived) before a registry outage;
3. then the oldest (the fault everyone else was already attached to).

An attached caller is not dispatched; when power is back every attached
caller lands on the callback list.  A caller attached to a fault flagged as a
major outage, or to a registry outage that takes out a whole feeder, is a key
caller: that callback never slips (:func:`attached_is_major`).

Names are compared by :func:`area_key` (NFKC, spaces removed, ASCII lower
case, 千伏 read as kv) -- the same rule as ``ivr.outages.area_key`` and the
SQL function ``ticket_area_key`` (migrations/004); keep them equal.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

__all__ = ["KnownFault", "MATCH_RANK", "area_key", "attached_is_major", "choose_fault"]

MATCH_RANK = {"transformer_area": 0, "village": 1, "feeder": 2}
_WS = re.compile(r"[ \t\r\n\f\v]+")


def area_key(name: str | None) -> str:
    s = unicodedata.normalize("NFKC", name or "")
    s = _WS.sub("", s)
    s = "".join(ch.lower() if "A" <= ch <= "Z" else ch for ch in s)
    return s.replace("千伏", "kv")


@dataclass(frozen=True)
class KnownFault:
    kind: str                 # "order" (an open repair order) or "outage" (the registry)
    id: int
    ref: str                  # order_no / outage_no
    matched_on: str           # transformer_area / village / feeder
    matched_name: str
    opened_at: datetime
    major: bool = False       # a major outage: attached callers never slip
    status: str = ""
    summary: str = ""         # what the agent tells the caller (cause, crew, expected restoration)
    expected_restore_at: datetime | None = None
    callers: int = 0          # callers already attached

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "ref": self.ref, "matched_on": self.matched_on,
                "matched_name": self.matched_name, "opened_at": self.opened_at.isoformat(),
                "major": self.major, "status": self.status, "summary": self.summary,
                "expected_restore_at": self.expected_restore_at.isoformat() if self.expected_restore_at else None,
                "callers": self.callers}


def rank(f: KnownFault) -> tuple:
    return (MATCH_RANK.get(f.matched_on, 9), 0 if f.kind == "order" else 1, f.opened_at, f.id)


def choose_fault(candidates: Iterable[KnownFault]) -> KnownFault | None:
    ordered = sorted(candidates, key=rank)
    return ordered[0] if ordered else None


def attached_is_major(fault: KnownFault) -> bool:
    return fault.major
