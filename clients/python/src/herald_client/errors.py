"""Exceptions: herald's error answers and network failures.

herald answers every error as ``{"status": "error", "message": ...}`` with a 4xx or 5xx
status. Each becomes a :class:`HeraldError` subclass chosen by the status, carrying herald's
``message`` and the ``status``. A request that never got an answer raises
:class:`HeraldConnectionError` (``status`` is ``None``).
"""

from __future__ import annotations

import json

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HeraldConnectionError",
    "HeraldError",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "error_for",
]


class HeraldError(Exception):
    """An error answered by herald (or a request that got no answer).

    ``message`` is herald's own message, ``status`` the HTTP status (``None`` when no answer
    came back) and ``url`` the node asked, when known.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class BadRequest(HeraldError):
    """400: the request was refused as invalid (a channel name, ``data.type``, a limit...)."""


class Unauthorized(HeraldError):
    """401: a missing or wrong API key, or an invalid or expired user token."""


class Forbidden(Unauthorized):
    """403: authenticated, but not allowed (a feature's or a reserved channel, another
    user's private channel, a missing role)."""


class NotFound(HeraldError):
    """404: no such resource (for example presence on a channel that has none)."""


class RequestTimeout(HeraldError):
    """408: herald gave up waiting for the request (its body stalled)."""


class Conflict(HeraldError):
    """409 or 422: well formed but refused; herald answers 422 when an ``idempotency_key``
    already names another event (another type, data or users)."""


class PayloadTooLarge(HeraldError):
    """413: the body is over ``max_request_body_bytes``, or ``data`` over
    ``max_payload_bytes``."""


class TooManyRequests(HeraldError):
    """429: slow down; ``retry_after`` is the server's ``Retry-After`` in seconds, if given."""

    def __init__(
        self,
        message: str,
        status: int | None = 429,
        url: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status, url)
        self.retry_after = retry_after


class Unavailable(HeraldError):
    """5xx: the node cannot serve the request now (503 ``store full``, shutting down, ...).
    Nothing was committed for a 503; with several base URLs the client has already tried
    the other nodes."""


class HeraldConnectionError(HeraldError):
    """No answer: the node could not be reached, or the connection failed or timed out.

    For a publish, ``sent`` tells whether the request may have reached herald (then it may
    have been committed: retry with the same ``idempotency_key`` on the same node)."""

    def __init__(self, message: str, url: str | None = None, sent: bool = False):
        super().__init__(message, None, url)
        self.sent = sent


_BY_STATUS: dict[int, type[HeraldError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    422: Conflict,
}


def _message_of(body: bytes, reason: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or reason
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return reason


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def error_for(
    status: int,
    body: bytes,
    reason: str = "",
    url: str | None = None,
    retry_after: str | None = None,
) -> HeraldError:
    """The exception for an error answer: its class from ``status``, herald's message from
    the ``{"status": "error", "message": ...}`` body (the body's text, or the reason phrase,
    when it is not that)."""
    message = _message_of(body, reason or f"HTTP {status}")
    if status == 429:
        return TooManyRequests(message, status, url, _retry_after(retry_after))
    if status >= 500:
        return Unavailable(message, status, url)
    cls = _BY_STATUS.get(status, HeraldError)
    return cls(message, status, url)
