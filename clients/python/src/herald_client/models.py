"""What herald answers, as frozen dataclasses, and what a batch takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

__all__ = [
    "BatchEvent",
    "BroadcastSent",
    "Cluster",
    "History",
    "Presence",
    "PresenceUser",
    "Published",
    "PublishedBatch",
    "PublishedEvent",
    "Role",
    "UserId",
]

Role = Literal["creator", "team", "admin"]
"""The roles herald knows, spelled as its tokens carry them."""

UserId = str | int
"""A user id: herald takes strings and non-negative integers (the seeds' ids are integers)."""


class _BatchEventRequired(TypedDict):
    channel: str
    data: Mapping[str, Any]


class BatchEvent(_BatchEventRequired, total=False):
    """One event of :meth:`Herald.batch`: ``{channel, data, users?, idempotency_key?}``."""

    users: Sequence[UserId] | None
    idempotency_key: str | None


@dataclass(frozen=True)
class Published:
    """The answer to a publish on one channel, given after herald committed it.

    ``cursor`` covers the event (resume a socket from it with ``?since=``); ``replicated``
    says another node stored it too (``--replication 2``); ``replayed`` says the
    ``idempotency_key`` already named this event, and nothing new was published.
    """

    id: str
    cursor: str
    replicated: bool
    replayed: bool = False


@dataclass(frozen=True)
class PublishedEvent:
    """One event of a multi-channel publish or of a batch, in the order given."""

    channel: str
    id: str
    cursor: str
    replayed: bool = False


@dataclass(frozen=True)
class PublishedBatch:
    """The answer to :meth:`Herald.publish_many` or :meth:`Herald.batch`: one entry per
    event, in the order given (the last cursor covers them all)."""

    events: tuple[PublishedEvent, ...]
    replicated: bool

    @property
    def cursor(self) -> str:
        """The cursor of the last event, which covers the whole batch."""
        return self.events[-1].cursor if self.events else ""

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class History:
    """A page of a channel's history, oldest first.

    Each event is its ``data`` with ``channel`` and ``cursor`` added, as sockets receive it.
    ``cursor`` is where the page ends: pass it as ``since`` for the next page. ``complete``
    says nothing more was there; ``truncated`` says ``since`` is older than what the channel
    keeps (reload that channel's state from its source).
    """

    channel: str
    events: tuple[dict[str, Any], ...]
    cursor: str
    complete: bool
    truncated: bool


@dataclass(frozen=True)
class PresenceUser:
    user_id: str
    name: str
    connections: int


@dataclass(frozen=True)
class Presence:
    """Who is on a channel, cluster-wide, sorted by user id. ``count`` includes users past
    ``max_users_per_channel``, whom ``users`` leaves out (then ``truncated`` is true)."""

    channel: str
    count: int
    users: tuple[PresenceUser, ...]
    truncated: bool


@dataclass(frozen=True)
class Cluster:
    """``GET /api/cluster``: the members as this node sees them. ``raw`` is the whole answer
    (links, version vectors, ...)."""

    node_id: str
    cluster_id: str
    members: tuple[dict[str, Any], ...]
    quorum: dict[str, Any] | None
    unreachable: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class BroadcastSent:
    """The answer to :meth:`Herald.broadcast`: the broadcast's id, its cursor, and how many
    users were connected to the broadcast socket (cluster-wide)."""

    id: str
    cursor: str
    sent_to_users: int
