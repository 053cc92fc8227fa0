"""The asyncio client against the same real node: the same calls, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import Node
from support import dead_url

from herald_client import AsyncHerald, BadRequest, HeraldConnectionError, Unauthorized

Unique = Callable[[str], str]


def test_publish_batch_and_history(node: Node, unique: Unique) -> None:
    channel = unique("news")

    async def scenario() -> None:
        async with AsyncHerald(node.url, node.api_key, jwt_secret=node.jwt_secret) as herald:
            published = await herald.publish(channel, {"type": "headline", "n": 0})
            batch = await herald.batch(
                [{"channel": channel, "data": {"type": "headline", "n": n}} for n in (1, 2)]
            )
            many = await herald.publish_many(
                [channel, unique("news")], {"type": "headline", "n": 3}
            )
            page = await herald.history(channel, since=published.cursor)
            assert [event["n"] for event in page.events] == [1, 2, 3]
            assert page.events[1]["cursor"] == batch.cursor
            assert page.cursor == many.events[0].cursor
            pages = [p async for p in herald.iter_history(channel, limit=3)]
            assert [len(p.events) for p in pages] == [3, 1]
            token = herald.token("7", name="ann")
            as_user = await herald.history(channel, token=token)
            assert as_user.events == (await herald.history(channel)).events

    asyncio.run(scenario())


def test_presence_cluster_and_tokens(node: Node) -> None:
    async def scenario() -> None:
        async with AsyncHerald(node.url, node.api_key, jwt_secret=node.jwt_secret) as herald:
            counts = await asyncio.gather(
                herald.presence_count("forum"),
                herald.presence_count("forum", token=herald.token(7)),
            )
            assert list(counts) == [0, 0]
            assert (await herald.presence("forum")).users == ()
            assert (await herald.cluster()).node_id == node.node_id

    asyncio.run(scenario())


def test_errors_are_the_same(node: Node) -> None:
    async def scenario() -> None:
        async with AsyncHerald(node.url, node.api_key) as herald:
            with pytest.raises(BadRequest) as refused:
                await herald.batch([{"channel": "news", "data": {"type": ""}}])
            assert refused.value.message == "events[0]: data.type must be a non-empty string"
        async with AsyncHerald(node.url, "wrong") as wrong:
            with pytest.raises(Unauthorized):
                await wrong.cluster()
        unreachable = AsyncHerald([dead_url()], node.api_key)
        with pytest.raises(HeraldConnectionError):
            await unreachable.cluster()
        await unreachable.close()

    asyncio.run(scenario())


def test_fails_over_like_the_sync_client(node: Node, unique: Unique) -> None:
    async def scenario() -> None:
        async with AsyncHerald([dead_url(), node.url], node.api_key) as herald:
            await herald.publish(unique("news"), {"type": "x"})
            assert (await herald.cluster()).node_id == node.node_id

    asyncio.run(scenario())
