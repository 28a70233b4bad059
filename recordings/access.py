"""Who may hear a recording: pure functions over ``cti.auth.Principal``.

* an agent (坐席) hears the calls they took themselves;
* supervisors (班长; quality staff are supervisors) hear every call of the
  centre -- the county has one 966022 centre, so every recording;
* a department (部门) hears the calls attached to work orders dispatched to it;
* an administrator hears everything.

Only the principal's ``role`` (a ``str`` enum: compared by value),
``agent_id`` and ``department`` are read, so this module needs nothing but
the standard library."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from cti.auth import Principal


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """What access depends on: the agent of the recorded call and the
    departments its work orders were dispatched to."""

    agent: str = ""
    departments: frozenset[str] = field(default_factory=frozenset)


def _role(principal: "Principal") -> str:
    role = principal.role
    return getattr(role, "value", role)


def may_listen(principal: "Principal", facts: RecordingFacts) -> bool:
    role = _role(principal)
    if role in ("admin", "supervisor"):
        return True
    if role == "agent":
        return bool(principal.agent_id) and principal.agent_id == facts.agent
    if role == "department":
        return bool(principal.department) and principal.department in facts.departments
    return False


def may_download(principal: "Principal", facts: RecordingFacts) -> bool:
    """Downloading a copy follows the same rule as listening (every download
    is audited like every listen)."""
    return may_listen(principal, facts)


def may_score(principal: "Principal") -> bool:
    """质检: supervisors (and admins) score recordings."""
    return _role(principal) in ("admin", "supervisor")


def may_see_scores(principal: "Principal", agent: str) -> bool:
    """An agent sees their own scores; supervisors and admins anyone's."""
    role = _role(principal)
    if role in ("admin", "supervisor"):
        return True
    return role == "agent" and bool(principal.agent_id) and principal.agent_id == agent


def may_manage(principal: "Principal") -> bool:
    """Set a legal hold by hand, see the audit log."""
    return _role(principal) in ("admin", "supervisor")


def listing_filter(principal: "Principal") -> tuple[str, str]:
    """``(kind, value)`` for listing recordings: ``("all", "")``,
    ``("agent", id)``, ``("department", name)`` or ``("none", "")``."""
    role = _role(principal)
    if role in ("admin", "supervisor"):
        return "all", ""
    if role == "agent" and principal.agent_id:
        return "agent", principal.agent_id
    if role == "department" and principal.department:
        return "department", principal.department
    return "none", ""
