"""Failover and error answers, with httpx's mock transport instead of a node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from herald_client import (
    AsyncHerald,
    BadRequest,
    Conflict,
    Forbidden,
    Herald,
    HeraldConnectionError,
    HeraldError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from herald_client.errors import error_for

A, B = "http://a.test:8000", "http://b.test:8000"
PUBLISHED = {"status": "success", "id": "e1", "cursor": "c1", "replicated": False}
Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"status": "error", "message": message})


def recording(handler: Handler) -> tuple[list[str], Handler]:
    asked: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url.host}")
        return handler(request)

    return asked, record


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (422, Conflict),
        (429, TooManyRequests),
        (500, Unavailable),
        (503, Unavailable),
        (418, HeraldError),
    ],
)
def test_each_status_has_its_exception(status: int, kind: type[HeraldError]) -> None:
    body = json.dumps({"status": "error", "message": "herald says no"}).encode()
    raised = error_for(status, body, "Reason")
    assert type(raised) is kind
    assert (raised.message, raised.status) == ("herald says no", status)
    assert str(raised) == f"{status}: herald says no"


def test_a_body_that_is_not_heralds_keeps_its_text_or_the_reason() -> None:
    assert error_for(502, b"bad gateway from the proxy", "Bad Gateway").message == (
        "bad gateway from the proxy"
    )
    assert error_for(502, b"", "Bad Gateway").message == "Bad Gateway"
    limited = error_for(429, b"{}", "Too Many Requests", retry_after="2.5")
    assert isinstance(limited, TooManyRequests) and limited.retry_after == 2.5


def test_a_503_goes_to_the_next_node_which_is_then_asked_first() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            return error(503, "store full")
        return httpx.Response(200, json=PUBLISHED)

    asked, record = recording(handler)
    with Herald([A, B], "key", transport=httpx.MockTransport(record)) as herald:
        assert herald.publish("news", {"type": "x"}).id == "e1"
        assert herald.publish("news", {"type": "x"}).id == "e1"
    assert asked == ["POST a.test", "POST b.test", "POST b.test"]


def test_every_node_503_raises_the_last_answer() -> None:
    transport = httpx.MockTransport(lambda request: error(503, "store full"))
    herald = Herald([A, B], "key", transport=transport)
    with herald, pytest.raises(Unavailable) as failed:
        herald.publish("news", {"type": "x"})
    assert (failed.value.status, failed.value.message) == (503, "store full")


def test_a_publish_that_may_have_been_sent_is_not_repeated_elsewhere() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=PUBLISHED)

    asked, record = recording(handler)
    with Herald([A, B], "key", transport=httpx.MockTransport(record)) as herald:
        with pytest.raises(HeraldConnectionError) as failed:
            herald.publish("news", {"type": "x"}, idempotency_key="k1")
        assert failed.value.sent is True and failed.value.status is None
        assert asked == ["POST a.test"]

        # A read may go anywhere.
        def history(request: httpx.Request) -> httpx.Response:
            if request.url.host == "a.test":
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(
                200,
                json={
                    "channel": "news",
                    "events": [],
                    "cursor": "",
                    "complete": True,
                    "truncated": False,
                },
            )

    asked2, record2 = recording(history)
    with Herald([A, B], "key", transport=httpx.MockTransport(record2)) as herald:
        assert herald.history("news").complete
    assert asked2 == ["GET a.test", "GET b.test"]


def test_requests_carry_the_key_or_the_token_and_encode_channels() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"channel": "x", "count": 3})

    with Herald(A + "/", "key", transport=httpx.MockTransport(handler)) as herald:
        assert herald.presence_count("forum:thread:1 /x") == 3
        assert herald.presence_count("forum", token="user-token") == 3
    assert seen[0].url.raw_path == b"/api/channels/forum%3Athread%3A1%20%2Fx/presence/count"
    assert seen[0].headers["authorization"] == "Bearer key"
    assert seen[1].headers["authorization"] == "Bearer user-token"


def test_an_unexpected_answer_is_an_error_not_a_crash() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"id": 1}))
    herald = Herald(A, "key", transport=transport)
    with herald, pytest.raises(HeraldError, match="unexpected answer"):
        herald.publish("news", {"type": "x"})


def test_the_async_client_fails_over_the_same_way() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=PUBLISHED)

    asked, record = recording(handler)

    async def scenario() -> None:
        async with AsyncHerald([A, B], "key", transport=httpx.MockTransport(record)) as herald:
            assert (await herald.publish("news", {"type": "x"})).cursor == "c1"

    asyncio.run(scenario())
    assert asked == ["POST a.test", "POST b.test"]


def test_arguments_that_cannot_be_right_are_refused_before_sending() -> None:
    with pytest.raises(ValueError):
        Herald([], "key")
    with pytest.raises(ValueError):
        Herald("127.0.0.1:8000", "key")
    with Herald(A, "key", transport=httpx.MockTransport(lambda r: error(500, "no"))) as herald:
        with pytest.raises(TypeError):
            herald.publish("news", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            herald.publish_many("news", {"type": "x"})
        with pytest.raises(TypeError):
            herald.publish("news", {"type": "x"}, users="7")
