"""Ports of the work-order loop: what the services need from the outside
world, as Protocols.  Stdlib only; adapters live in :mod:`tickets.crew`,
:mod:`tickets.outage_source` and the composition root.

* :class:`CrewMessenger` -- tells a repair crew (or any assignee) about an
  order, by SMS or by a phone call.  Messages are first written to the
  ``crew_messages`` outbox in the order's own transaction, then handed to
  the messenger after commit (and retried by the deadline worker), so a
  crash never loses a dispatch and a rolled-back dispatch never texts a
  crew.  Delivery is therefore at-least-once.
* :class:`SlaNotifier` -- receives ``SlaWarning`` / ``SlaBreached`` events
  (the callback deadline's among them) after they are committed;
  ``cti/app.py`` pushes them to the supervisors' wallboard and to the order's
  agent's page.  May be sync or async; exceptions are logged, never fatal.
* :class:`OutageSource` -- published / restored outages of the outage
  registry (migration 002), for duplicate-fault merging.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Mapping, Protocol, Sequence, runtime_checkable

from .merging import KnownFault

__all__ = ["CrewMessage", "CrewMessenger", "OutageSource", "SlaNotifier"]


@dataclass(frozen=True)
class CrewMessage:
    id: int
    order_id: int
    order_no: str
    channel: str          # "sms" | "phone"
    recipient: str
    phone: str
    body: str


@runtime_checkable
class CrewMessenger(Protocol):
    name: str

    async def send(self, message: CrewMessage) -> None:
        """Deliver or raise; a raise leaves the message pending for a retry."""


class SlaNotifier(Protocol):
    def __call__(self, event: Mapping[str, Any]) -> Awaitable[None] | None: ...


class OutageSource(Protocol):
    async def published_for(self, conn: Any, *, transformer_area: str, feeder: str, village: str,
                            at: Any) -> Sequence[KnownFault]:
        """Published, not restored outages covering any of these areas."""

    async def restored_among(self, conn: Any, outage_ids: Sequence[int]) -> Sequence[tuple[int, Any]]:
        """(outage_id, restored_at) of those among ``outage_ids`` that are restored."""
