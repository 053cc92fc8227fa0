"""What each method sends and how its answer is read, shared by the sync and async clients.

A method builds a :class:`Call` (method, path, query, body, the bearer to use, the parser of
its answer); the client's runner sends it to a node, fails over when that is safe (see
:class:`Nodes`), and hands the answer to :func:`finish`.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from .errors import HeraldConnectionError, HeraldError, error_for
from .models import (
    BatchEvent,
    BroadcastSent,
    Cluster,
    History,
    Presence,
    PresenceUser,
    Published,
    PublishedBatch,
    PublishedEvent,
    UserId,
)

T = TypeVar("T")

USER_AGENT = "herald-client-python/0.1.0"
DEFAULT_TIMEOUT = 10.0

Timeout = float | httpx.Timeout


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    # A user token to send instead of the API key.
    token: str | None = None

    @property
    def may_repeat(self) -> bool:
        """Whether asking another node after this request may have reached herald is safe:
        reads are; a publish is not (it may have been committed, and a retry on another node
        before it replicated there would publish it twice)."""
        return self.method == "GET"


# Failures before the request was sent: any call may go to the next node.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class Nodes:
    """The base URLs, and which one answered last (the next request starts there)."""

    def __init__(self, base_url: str | Sequence[str]):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one base URL is required")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"base URL {url!r} must start with http:// or https://")
        self.urls: tuple[str, ...] = tuple(url.rstrip("/") for url in urls)
        self.current = 0

    def order(self) -> list[tuple[int, str]]:
        """Every node once, with its index, starting from the one that answered last."""
        count, start = len(self.urls), self.current
        return [(i % count, self.urls[i % count]) for i in range(start, start + count)]


def headers(api_key: str, call: Call[Any]) -> dict[str, str]:
    return {
        "authorization": f"Bearer {call.token if call.token is not None else api_key}",
        "user-agent": USER_AGENT,
        "accept": "application/json",
    }


def tls_verify(verify: ssl.SSLContext | str | os.PathLike[str] | bool) -> ssl.SSLContext | bool:
    """What httpx is given for ``verify``: a CA file's path becomes a context trusting it."""
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


def connection_error(base: str, url: str, error: httpx.TransportError) -> HeraldConnectionError:
    sent = not isinstance(error, NOT_SENT)
    detail = str(error) or type(error).__name__
    return HeraldConnectionError(f"{base}: {detail}", url, sent)


def fails_over(response: httpx.Response) -> bool:
    """A 503 (the store is full or closed, the node is shutting down): nothing was
    committed, so the next node may be asked."""
    return response.status_code == 503


def error_of(response: httpx.Response, url: str) -> HeraldError:
    """The exception for an error answer."""
    return error_for(
        response.status_code,
        response.content,
        response.reason_phrase,
        url,
        response.headers.get("retry-after"),
    )


def finish(call: Call[T], response: httpx.Response, url: str) -> T:
    """The parsed answer, or the exception for an error answer."""
    if response.status_code >= 400:
        raise error_of(response, url)
    try:
        answer = json.loads(response.content)
    except ValueError:
        raise HeraldError(
            f"herald answered {response.status_code} with a body that is not JSON",
            response.status_code,
            url,
        ) from None
    try:
        return call.parse(answer)
    except (KeyError, TypeError, ValueError) as error:
        raise HeraldError(
            f"unexpected answer from herald ({type(error).__name__}: {error})",
            response.status_code,
            url,
        ) from None


# ---- reading answers ----


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _bool(obj: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise TypeError(f"{key} is not a boolean")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer")
    return value


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj[key]
    if not isinstance(value, list):
        raise TypeError(f"{key} is not a list")
    return value


def _published(answer: Any) -> Published:
    return Published(
        id=_str(answer, "id"),
        cursor=_str(answer, "cursor"),
        replicated=_bool(answer, "replicated"),
        replayed=_bool(answer, "replayed", False),
    )


def _batch(channels: Sequence[str]) -> Callable[[Any], PublishedBatch]:
    def parse(answer: Any) -> PublishedBatch:
        items = _list(answer, "events")
        if len(items) != len(channels):
            raise ValueError(f"{len(items)} events answered for {len(channels)} sent")
        events = tuple(
            PublishedEvent(
                channel=channel,
                id=_str(item, "id"),
                cursor=_str(item, "cursor"),
                replayed=_bool(item, "replayed", False),
            )
            for channel, item in zip(channels, items, strict=False)
        )
        return PublishedBatch(events=events, replicated=_bool(answer, "replicated"))

    return parse


def _history(answer: Any) -> History:
    events = _list(answer, "events")
    if not all(isinstance(event, dict) for event in events):
        raise TypeError("events are not objects")
    return History(
        channel=_str(answer, "channel"),
        events=tuple(events),
        cursor=_str(answer, "cursor"),
        complete=_bool(answer, "complete"),
        truncated=_bool(answer, "truncated"),
    )


def _presence(answer: Any) -> Presence:
    users = tuple(
        PresenceUser(
            user_id=_str(user, "user_id"),
            name=_str(user, "name"),
            connections=_int(user, "connections"),
        )
        for user in _list(answer, "users")
    )
    return Presence(
        channel=_str(answer, "channel"),
        count=_int(answer, "count"),
        users=users,
        truncated=_bool(answer, "truncated"),
    )


def _count(answer: Any) -> int:
    return _int(answer, "count")


def _cluster(answer: Any) -> Cluster:
    quorum = answer.get("quorum")
    unreachable = answer.get("unreachable") or []
    return Cluster(
        node_id=_str(answer, "node_id"),
        cluster_id=str(answer.get("cluster_id", "")),
        members=tuple(dict(member) for member in _list(answer, "members")),
        quorum=dict(quorum) if isinstance(quorum, dict) else None,
        unreachable=tuple(str(node) for node in unreachable),
        raw=dict(answer),
    )


def _broadcast(answer: Any) -> BroadcastSent:
    return BroadcastSent(
        id=_str(answer, "id"),
        cursor=_str(answer, "cursor"),
        sent_to_users=_int(answer, "sent_to_users"),
    )


def _cursor(answer: Any) -> str:
    return _str(answer, "cursor")


def _comment(answer: Any) -> dict[str, Any]:
    comment = answer["comment"]
    if not isinstance(comment, dict):
        raise TypeError("comment is not an object")
    return {**comment, "cursor": _cursor(answer)}


def _edited(answer: Any) -> dict[str, Any]:
    _cursor(answer)
    return {key: value for key, value in answer.items() if key != "status"}


# ---- building requests ----


def channel_path(channel: str) -> str:
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a string, not {type(channel).__name__}")
    return quote(channel, safe="")


def _users(users: Iterable[UserId] | None) -> list[UserId] | None:
    if users is None:
        return None
    if isinstance(users, (str, bytes)):
        raise TypeError("users must be a list of user ids, not a string")
    return list(users)


def _data(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a dict with a non-empty 'type', not {type(data).__name__}")
    return dict(data)


def _event_body(
    data: Mapping[str, Any],
    users: Iterable[UserId] | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"data": _data(data)}
    target = _users(users)
    if target is not None:
        body["users"] = target
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return body


def publish(
    channel: str,
    data: Mapping[str, Any],
    users: Iterable[UserId] | None,
    idempotency_key: str | None,
) -> Call[Published]:
    body = {"channel": channel, **_event_body(data, users, idempotency_key)}
    return Call("POST", "/api/publish", _published, body=body)


def publish_many(
    channels: Iterable[str],
    data: Mapping[str, Any],
    users: Iterable[UserId] | None,
    idempotency_key: str | None,
) -> Call[PublishedBatch]:
    if isinstance(channels, str):
        raise TypeError("channels must be a list of channel names, not a string")
    names = list(channels)
    body = {"channels": names, **_event_body(data, users, idempotency_key)}
    return Call("POST", "/api/publish", _batch(names), body=body)


def batch(events: Iterable[BatchEvent | Mapping[str, Any]]) -> Call[PublishedBatch]:
    sent: list[dict[str, Any]] = []
    channels: list[str] = []
    for index, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise TypeError(f"events[{index}] must be a dict, not {type(event).__name__}")
        item: dict[str, Any] = {k: v for k, v in event.items() if v is not None}
        if "data" in item:
            item["data"] = _data(item["data"])
        if "users" in item:
            item["users"] = _users(item["users"])
        sent.append(item)
        channels.append(str(item.get("channel", "")))
    return Call("POST", "/api/batch", _batch(channels), body={"events": sent})


def history(
    channel: str,
    since: str | None,
    limit: int | None,
    token: str | None,
) -> Call[History]:
    params: dict[str, str] = {}
    if since:
        params["since"] = since
    if limit is not None:
        params["limit"] = str(limit)
    path = f"/api/channels/{channel_path(channel)}/history"
    return Call("GET", path, _history, params=params, token=token)


def presence(channel: str, token: str | None) -> Call[Presence]:
    return Call("GET", f"/api/channels/{channel_path(channel)}/presence", _presence, token=token)


def presence_count(channel: str, token: str | None) -> Call[int]:
    path = f"/api/channels/{channel_path(channel)}/presence/count"
    return Call("GET", path, _count, token=token)


def cluster() -> Call[Cluster]:
    return Call("GET", "/api/cluster", _cluster)


def broadcast(message: str, kind: str, token: str) -> Call[BroadcastSent]:
    body = {"message": message, "type": kind}
    return Call("POST", "/api/creator/broadcast", _broadcast, body=body, token=token)


def clear_broadcast(token: str) -> Call[str]:
    return Call("POST", "/api/creator/broadcast/clear", _cursor, body={}, token=token)


def _comment_fields(content: str, timestamp: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body


def comment(
    track_id: str | int, content: str, timestamp: float | None, token: str
) -> Call[dict[str, Any]]:
    path = f"/api/tracks/{channel_path(str(track_id))}/comments"
    body = _comment_fields(content, timestamp)
    return Call("POST", path, _comment, body=body, token=token)


def edit_comment(
    comment_id: str | int, content: str, timestamp: float | None, token: str
) -> Call[dict[str, Any]]:
    path = f"/api/comments/{channel_path(str(comment_id))}"
    body = _comment_fields(content, timestamp)
    return Call("PUT", path, _edited, body=body, token=token)


def delete_comment(comment_id: str | int, token: str) -> Call[str]:
    path = f"/api/comments/{channel_path(str(comment_id))}"
    return Call("DELETE", path, _cursor, token=token)
