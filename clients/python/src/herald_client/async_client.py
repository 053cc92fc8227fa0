"""The asynchronous client, :class:`AsyncHerald`, on one :class:`httpx.AsyncClient`: the same
methods as :class:`~herald_client.Herald`, awaitable."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _calls
from ._calls import DEFAULT_TIMEOUT, Call, Nodes, Timeout
from .errors import HeraldError
from .models import (
    BatchEvent,
    BroadcastSent,
    Cluster,
    History,
    Presence,
    Published,
    PublishedBatch,
    Role,
    UserId,
)
from .tokens import mint_token

__all__ = ["AsyncHerald"]

T = TypeVar("T")


class AsyncHerald:
    """A backend's client for herald's HTTP API, for asyncio: the methods of
    :class:`~herald_client.Herald`, awaitable.

    ``base_url`` is one node (``"http://127.0.0.1:8000"``) or a list of them: a request that
    could not reach a node, or that a node answered 503, goes to the next one (a publish only
    when it cannot have been committed: the connection failed before it was sent, or the
    answer was 503). The node that answered last is asked first next time.

    ``api_key`` is ``HERALD_API_KEY``; ``jwt_secret`` (``HERALD_JWT_SECRET``) is needed only
    by :meth:`token`. ``verify`` is how an ``https://`` node's certificate is checked, as for
    :class:`Herald`. Use it as an async context manager, or ``await close()``.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str,
        jwt_secret: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        *,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._nodes = Nodes(base_url)
        self._api_key = api_key
        self._jwt_secret = jwt_secret
        self._http = httpx.AsyncClient(
            timeout=timeout, verify=_calls.tls_verify(verify), transport=transport
        )

    @property
    def base_urls(self) -> tuple[str, ...]:
        return self._nodes.urls

    # ---- publishing ----

    async def publish(
        self,
        channel: str,
        data: Mapping[str, Any],
        users: Iterable[UserId] | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publishes ``data`` (a dict with a non-empty ``"type"``) on ``channel``
        (``POST /api/publish``), answered after herald committed it.

        ``users`` limits delivery to those users' sockets on the channel. With an
        ``idempotency_key`` (1 to 128 printable ASCII characters) a retry of the same event
        answers the first one's id with ``replayed=True`` and publishes nothing.
        """
        return await self._run(_calls.publish(channel, data, users, idempotency_key))

    async def publish_many(
        self,
        channels: Iterable[str],
        data: Mapping[str, Any],
        users: Iterable[UserId] | None = None,
        idempotency_key: str | None = None,
    ) -> PublishedBatch:
        """Publishes the same ``data`` once on each of ``channels`` (each named once), in one
        transaction; one entry per channel in the order given."""
        return await self._run(_calls.publish_many(channels, data, users, idempotency_key))

    async def batch(self, events: Iterable[BatchEvent | Mapping[str, Any]]) -> PublishedBatch:
        """Publishes ``events`` (``{channel, data, users?, idempotency_key?}`` each) in one
        transaction (``POST /api/batch``), all or none: the first bad event refuses the
        batch, with herald's message naming it (``events[3]: ...``), and nothing is stored.
        One entry per event, in order."""
        return await self._run(_calls.batch(events))

    # ---- reading ----

    async def history(
        self,
        channel: str,
        since: str | None = None,
        limit: int | None = None,
        *,
        token: str | None = None,
    ) -> History:
        """A page of ``channel``'s history after cursor ``since`` (from the start when
        ``None``), at most ``limit`` events (herald's default 100, at most 1,000). With
        ``token`` the request is the user's: herald answers only what that user may read."""
        return await self._run(_calls.history(channel, since, limit, token))

    async def iter_history(
        self,
        channel: str,
        since: str | None = None,
        limit: int | None = None,
        *,
        token: str | None = None,
    ) -> AsyncIterator[History]:
        """Every page of ``channel``'s history after ``since``, until one is complete."""
        while True:
            page = await self.history(channel, since, limit, token=token)
            yield page
            if page.complete or page.cursor == since:
                return
            since = page.cursor

    async def presence(self, channel: str, *, token: str | None = None) -> Presence:
        """Who is on ``channel`` cluster-wide (``GET /api/channels/{channel}/presence``).
        A channel without presence raises :class:`~herald_client.NotFound`."""
        return await self._run(_calls.presence(channel, token))

    async def presence_count(self, channel: str, *, token: str | None = None) -> int:
        """How many users are on ``channel`` cluster-wide."""
        return await self._run(_calls.presence_count(channel, token))

    async def cluster(self) -> Cluster:
        """The members as the node asked sees them (``GET /api/cluster``)."""
        return await self._run(_calls.cluster())

    # ---- the broadcast banner (user tokens) ----

    async def broadcast(
        self, message: str, message_type: str = "info", *, token: str
    ) -> BroadcastSent:
        """Shows the broadcast banner to every user (``POST /api/creator/broadcast``), as
        the creator or admin whose ``token`` is given (see :meth:`token`)."""
        return await self._run(_calls.broadcast(message, message_type, token))

    async def clear_broadcast(self, *, token: str) -> str:
        """Clears the active broadcast, as a creator or admin; answers its cursor."""
        return await self._run(_calls.clear_broadcast(token))

    # ---- track comments (user tokens) ----

    async def comment(
        self,
        track_id: str | int,
        content: str,
        timestamp: float | None = None,
        *,
        token: str,
    ) -> dict[str, Any]:
        """Posts a comment on a track as the user whose ``token`` is given
        (``POST /api/tracks/{track_id}/comments``): herald stores it, sends ``new_comment``
        to the track's sockets and ``mention`` to each ``@name``. Answers the comment (its
        ``id``, ...) with the event's ``cursor``."""
        return await self._run(_calls.comment(track_id, content, timestamp, token))

    async def edit_comment(
        self,
        comment_id: str | int,
        content: str,
        timestamp: float | None = None,
        *,
        token: str,
    ) -> dict[str, Any]:
        """Edits a comment, as its author (``PUT /api/comments/{id}``); answers the
        ``comment_edited`` event with its ``cursor``."""
        return await self._run(_calls.edit_comment(comment_id, content, timestamp, token))

    async def delete_comment(self, comment_id: str | int, *, token: str) -> str:
        """Deletes a comment, as its author or a creator, team member or admin
        (``DELETE /api/comments/{id}``); answers the event's cursor."""
        return await self._run(_calls.delete_comment(comment_id, token))

    # ---- tokens ----

    def token(
        self,
        sub: UserId,
        name: str | None = None,
        roles: Iterable[Role] = (),
        ttl: timedelta = timedelta(hours=1),
        creator_id: UserId | None = None,
    ) -> str:
        """A user token herald accepts (HS256 with ``jwt_secret``), valid for ``ttl``: give
        it to the browser for its sockets (``?token=``, ``Authorization: Bearer`` or the
        ``herald_token`` cookie)."""
        if self._jwt_secret is None:
            raise ValueError("Herald(jwt_secret=...) is required to mint tokens")
        return mint_token(self._jwt_secret, sub, name, roles, ttl, creator_id)

    # ---- lifecycle ----

    async def close(self) -> None:
        await self._http.aclose()

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> AsyncHerald:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncHerald({list(self._nodes.urls)!r})"

    async def _run(self, call: Call[T]) -> T:
        last: HeraldError | None = None
        for index, base in self._nodes.order():
            url = base + call.path
            try:
                response = await self._http.request(
                    call.method,
                    url,
                    params=call.params,
                    json=call.body,
                    headers=_calls.headers(self._api_key, call),
                )
            except httpx.TransportError as error:
                last = _calls.connection_error(base, url, error)
                if last.sent and not call.may_repeat:
                    raise last from error
                continue
            if _calls.fails_over(response):
                last = _calls.error_of(response, url)
                continue
            self._nodes.current = index
            return _calls.finish(call, response, url)
        if last is None:  # Nodes holds at least one URL
            raise HeraldError("no node to ask")
        raise last
