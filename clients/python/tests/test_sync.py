"""The synchronous client against a real herald node (the session's ``node`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from conftest import Node
from support import dead_url, wait_until

from herald_client import (
    BadRequest,
    Conflict,
    Forbidden,
    Herald,
    HeraldConnectionError,
    NotFound,
    Unauthorized,
)

Unique = Callable[[str], str]


def test_publish_then_history_returns_it_with_its_cursor(herald: Herald, unique: Unique) -> None:
    channel = unique("news")
    published = herald.publish(channel, {"type": "headline", "text": "hi", "n": 1})
    assert published.id and published.cursor
    assert published.replicated is False  # a single node: nobody else stored it
    assert published.replayed is False

    page = herald.history(channel)
    assert page.channel == channel
    assert page.events == (
        {"type": "headline", "text": "hi", "n": 1, "channel": channel, "cursor": published.cursor},
    )
    assert page.cursor == published.cursor
    assert page.complete is True
    assert page.truncated is False


def test_history_since_a_cursor_gives_only_what_came_after(herald: Herald, unique: Unique) -> None:
    channel = unique("news")
    first = herald.publish(channel, {"type": "n", "n": 1})
    herald.publish(channel, {"type": "n", "n": 2})
    herald.publish(channel, {"type": "n", "n": 3})
    page = herald.history(channel, since=first.cursor)
    assert [event["n"] for event in page.events] == [2, 3]
    assert herald.history(channel, since=page.cursor).events == ()


def test_history_pages_follow_each_other(herald: Herald, unique: Unique) -> None:
    channel = unique("news")
    batch = herald.batch([{"channel": channel, "data": {"type": "n", "n": n}} for n in range(5)])
    pages = list(herald.iter_history(channel, limit=2))
    assert [len(page.events) for page in pages] == [2, 2, 1]
    assert [event["n"] for page in pages for event in page.events] == [0, 1, 2, 3, 4]
    assert pages[-1].complete and pages[-1].cursor == batch.cursor
    assert not pages[0].complete


def test_publish_many_publishes_once_on_each_channel_in_order(
    herald: Herald, unique: Unique
) -> None:
    channels = [unique("forum:thread"), unique("user"), unique("news")]
    answer = herald.publish_many(channels, {"type": "new_message", "text": "hi"})
    assert [event.channel for event in answer.events] == channels
    assert len({event.id for event in answer.events}) == 3
    for event in answer.events:
        (stored,) = herald.history(event.channel).events
        assert stored["text"] == "hi" and stored["cursor"] == event.cursor


def test_batch_answers_each_event_in_order(herald: Herald, unique: Unique) -> None:
    forum, notifications = unique("forum:thread"), unique("notifications")
    answer = herald.batch(
        [
            {"channel": forum, "data": {"type": "new_message", "n": 1}},
            {
                "channel": notifications,
                "data": {"type": "forum_notification", "n": 2},
                "idempotency_key": unique("notif"),
            },
            {"channel": forum, "data": {"type": "new_message", "n": 3}},
        ]
    )
    assert [event.channel for event in answer.events] == [forum, notifications, forum]
    assert answer.cursor == answer.events[-1].cursor
    stored = herald.history(forum).events
    assert [event["n"] for event in stored] == [1, 3]
    assert [event["cursor"] for event in stored] == [answer.events[0].cursor, answer.cursor]


def test_a_batch_with_one_bad_event_publishes_nothing(herald: Herald, unique: Unique) -> None:
    channel = unique("news")
    with pytest.raises(BadRequest) as refused:
        herald.batch(
            [
                {"channel": channel, "data": {"type": "ok"}},
                {"channel": channel, "data": {"text": "no type"}},
                {"channel": channel, "data": {"type": "ok"}},
            ]
        )
    assert refused.value.status == 400
    assert refused.value.message == "events[1]: data.type must be a non-empty string"
    assert herald.history(channel).events == ()


def test_an_idempotent_retry_answers_the_same_event(herald: Herald, unique: Unique) -> None:
    channel, key = unique("user"), unique("msg")
    first = herald.publish(channel, {"type": "forum_notification", "id": 1}, idempotency_key=key)
    again = herald.publish(channel, {"type": "forum_notification", "id": 1}, idempotency_key=key)
    assert again.id == first.id
    assert again.cursor == first.cursor
    assert (first.replayed, again.replayed) == (False, True)
    assert len(herald.history(channel).events) == 1

    with pytest.raises(Conflict) as conflict:
        herald.publish(channel, {"type": "forum_notification", "id": 2}, idempotency_key=key)
    assert conflict.value.status == 422
    assert f"already names event {first.id}" in conflict.value.message


def test_an_invalid_channel_is_a_bad_request_with_heralds_message(herald: Herald) -> None:
    with pytest.raises(BadRequest) as refused:
        herald.publish("bad channel!", {"type": "x"})
    assert refused.value.status == 400
    assert "bad channel!" in refused.value.message
    # In a path the name is percent-encoded: herald sees the name, not another route.
    with pytest.raises(BadRequest) as refused:
        herald.history("a/b c?d")
    assert "a/b c?d" in refused.value.message


def test_data_needs_a_type(herald: Herald, unique: Unique) -> None:
    with pytest.raises(BadRequest) as refused:
        herald.publish(unique("news"), {"text": "hi"})
    assert refused.value.message == "data.type must be a non-empty string"


def test_a_feature_channel_is_forbidden(herald: Herald) -> None:
    with pytest.raises(Forbidden) as refused:
        herald.publish("broadcasts", {"type": "new_broadcast"})
    assert refused.value.status == 403
    assert refused.value.message == 'channel "broadcasts" is written by POST /api/creator/broadcast'


def test_a_wrong_api_key_is_unauthorized(node: Node) -> None:
    with Herald(node.url, "not-the-key") as wrong, pytest.raises(Unauthorized) as refused:
        wrong.publish("news", {"type": "x"})
    assert refused.value.status == 401
    assert refused.value.message == "invalid api key"
    assert not isinstance(refused.value, Forbidden)


def test_minted_tokens_carry_heralds_claims(herald: Herald, node: Node) -> None:
    token = herald.token(7, name="ann", roles=["team"], ttl=timedelta(minutes=5), creator_id=3)
    claims = jwt.decode(token, node.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == "7" and claims["name"] == "ann"
    assert claims["roles"] == ["team"] and claims["creator_id"] == "3"
    assert set(claims) == {"sub", "name", "roles", "creator_id", "exp"}
    assert 290 <= claims["exp"] - time.time() <= 300
    with pytest.raises(ValueError):
        herald.token(7, roles=["superuser"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Herald(node.url, node.api_key).token(7)  # no jwt_secret


def test_herald_accepts_minted_tokens_for_what_the_user_may_read(
    herald: Herald, unique: Unique
) -> None:
    user = unique("u")
    herald.publish(f"user:{user}", {"type": "forum_notification", "n": 1})
    mine = herald.token(user, name="ann")
    page = herald.history(f"user:{user}", token=mine)
    assert [event["n"] for event in page.events] == [1]

    other = herald.token("other")
    with pytest.raises(Forbidden) as refused:
        herald.history(f"user:{user}", token=other)
    assert refused.value.message == "another user's private channel"

    forged = jwt.encode(
        {"sub": user, "exp": 2**40}, "another-secret-just-as-long-as-herald-s", algorithm="HS256"
    )
    with pytest.raises(Unauthorized) as refused_forged:
        herald.history(f"user:{user}", token=forged)
    assert refused_forged.value.status == 401
    assert refused_forged.value.message == "invalid token"


def test_users_limits_who_receives_an_event(herald: Herald, unique: Unique) -> None:
    channel = unique("team")
    herald.publish(channel, {"type": "team_notification", "to": "ann"}, users=["ann-id", 42])
    herald.publish(channel, {"type": "team_notification", "to": "everyone"})
    seen = herald.history(channel, token=herald.token("ann-id")).events
    assert [event["to"] for event in seen] == ["ann", "everyone"]
    seen = herald.history(channel, token=herald.token("bob-id")).events
    assert [event["to"] for event in seen] == ["everyone"]
    assert len(herald.history(channel).events) == 2  # the API key sees everything


def test_presence_on_the_forum(herald: Herald, node: Node) -> None:
    presence = herald.presence("forum")
    assert (presence.channel, presence.count, presence.users) == ("forum", 0, ())
    assert presence.truncated is False
    assert herald.presence_count("forum") == 0

    sync_client = pytest.importorskip("websockets.sync.client")
    token = herald.token(7, name="ann")
    ws_url = node.url.replace("http://", "ws://") + f"/api/forum/ws/global?token={token}"
    with sync_client.connect(ws_url) as socket:
        assert '"connected"' in socket.recv(timeout=5)
        wait_until(lambda: herald.presence_count("forum") == 1)
        (user,) = herald.presence("forum").users
        assert (user.user_id, user.name, user.connections) == ("7", "ann", 1)
        assert herald.presence_count("forum", token=token) == 1
    wait_until(lambda: herald.presence_count("forum") == 0)


def test_presence_on_a_channel_without_presence_is_not_found(herald: Herald) -> None:
    with pytest.raises(NotFound) as missing:
        herald.presence("news")
    assert missing.value.status == 404
    assert missing.value.message == "channel news has no presence (see [presence] channels)"


def test_cluster_shows_this_node(herald: Herald, node: Node) -> None:
    cluster = herald.cluster()
    assert cluster.node_id == node.node_id
    (me,) = [member for member in cluster.members if member["is_self"]]
    assert me["node_id"] == node.node_id and me["state"] == "alive"
    assert cluster.unreachable == ()
    assert cluster.raw["status"] == "success"


def test_broadcasts_need_a_creator_or_admin_token(herald: Herald) -> None:
    admin = herald.token(1, name="boss", roles=["admin"])
    sent = herald.broadcast("Maintenance at 18:00", "warning", token=admin)
    assert sent.id and sent.cursor and sent.sent_to_users >= 0
    assert herald.clear_broadcast(token=admin)
    with pytest.raises(Forbidden) as refused:
        herald.broadcast("hello", token=herald.token(2))
    assert refused.value.message == "creator or admin role required"
    with pytest.raises(BadRequest) as invalid:
        herald.broadcast("x" * 281, token=admin)
    assert invalid.value.message.startswith("Broadcast message too long")


def test_fails_over_to_the_next_node_when_one_is_unreachable(node: Node, unique: Unique) -> None:
    with Herald([dead_url(), node.url], node.api_key) as herald:
        channel = unique("news")
        herald.publish(channel, {"type": "x"})  # never sent to the dead node: safe to move on
        assert herald.history(channel).events[0]["type"] == "x"


def test_no_node_reachable_is_a_connection_error(node: Node) -> None:
    herald = Herald([dead_url(), dead_url()], node.api_key, timeout=2.0)
    with herald, pytest.raises(HeraldConnectionError) as failed:
        herald.publish("news", {"type": "x"})
    assert failed.value.status is None
    assert failed.value.sent is False


def test_comments_go_through_heralds_own_endpoints(herald: Herald, unique: Unique) -> None:
    track = unique("t")
    ann, bob = herald.token(unique("ann"), name="ann"), herald.token(unique("bob"), name="bob")
    posted = herald.comment(track, "first! @bob", 12.5, token=ann)
    assert posted["content"] == "first! @bob" and posted["timestamp"] == 12.5
    (event,) = herald.history(f"track:{track}").events
    assert event["type"] == "new_comment" and event["cursor"] == posted["cursor"]
    assert event["comment"]["id"] == posted["id"]

    edited = herald.edit_comment(posted["id"], "first, edited", token=ann)
    assert edited["type"] == "comment_edited" and edited["timestamp"] == 12.5
    with pytest.raises(Forbidden) as refused:
        herald.edit_comment(posted["id"], "not mine", token=bob)
    assert refused.value.message == "only the author may edit a comment"
    assert herald.delete_comment(posted["id"], token=ann)
    with pytest.raises(NotFound):
        herald.delete_comment(posted["id"], token=ann)
    kinds = [event["type"] for event in herald.history(f"track:{track}").events]
    assert kinds == ["new_comment", "comment_edited", "comment_deleted"]
    with pytest.raises(Forbidden):
        herald.publish(f"track:{track}", {"type": "new_comment"})  # the feature writes it


def test_the_broadcast_sockets_are_counted(herald: Herald) -> None:
    assert herald.presence_count("broadcasts") == 0
