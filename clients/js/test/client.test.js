// herald-client under node's test runner, with a fake WebSocket and a fake clock.

import { test } from "node:test";
import assert from "node:assert/strict";

import { HeraldClient, backoff, decodeCursor, isAhead, mergeCursors } from "../herald.js";
import { client, cursor, flush } from "../testing/fakes.js";


test("backoff is full jitter under a doubling ceiling, capped", () => {
  assert.equal(backoff(0, 250, 10_000, () => 0.999), 249);
  assert.equal(backoff(3, 250, 10_000, () => 0.5), 1000);
  assert.equal(backoff(10, 250, 10_000, () => 0.999), 9990);
  assert.equal(backoff(50, 250, 10_000, () => 0.999), 9990);
  for (let attempt = 0; attempt < 12; attempt++) {
    for (const r of [0, 0.3, 0.999]) {
      const delay = backoff(attempt, 250, 10_000, () => r);
      assert.ok(delay >= 0 && delay < Math.min(10_000, 250 * 2 ** attempt), `${attempt} ${r}`);
    }
  }
});

test("connects with channels and token, and reports its states", async () => {
  const { herald, sockets } = await client();
  const states = [];
  herald.on("state", (s) => states.push(s));
  assert.equal(herald.state, "connecting");
  const [socket] = sockets;
  assert.equal(socket.url.origin, "ws://a:1");
  assert.equal(socket.url.pathname, "/ws");
  assert.deepEqual(socket.url.searchParams.getAll("channel"), ["news"]);
  assert.equal(socket.url.searchParams.get("token"), "t0");
  assert.equal(socket.url.searchParams.get("since"), null);
  socket.accept();
  assert.equal(herald.state, "connected");
  assert.deepEqual(states, ["connected"]);
  herald.close();
  assert.equal(herald.state, "closed");
  assert.equal(socket.closed.code, 1000);
});

test("keeps the cursor and resumes with it on another node, dropping what it already had", async () => {
  const { herald, clock, sockets } = await client();
  const got = [];
  herald.on("message", (m) => got.push(m.n));
  sockets[0].accept();
  sockets[0].receive({ type: "tick", n: 1, cursor: cursor({ a: 1 }) });
  sockets[0].receive({ type: "tick", n: 2, cursor: cursor({ a: 2 }) });
  assert.equal(herald.cursor, cursor({ a: 2 }));
  sockets[0].drop(1012, "restarting");
  assert.equal(herald.state, "reconnecting");
  await clock.advance(1000);
  const second = sockets[1];
  assert.equal(second.url.origin, "ws://b:2", "1012 moves to the next node");
  assert.equal(second.url.searchParams.get("since"), cursor({ a: 2 }));
  second.accept({ cursor: cursor({ a: 2 }) });
  // The node replays one event the client already had, then a new one.
  second.receive({ type: "tick", n: 2, cursor: cursor({ a: 2 }) });
  second.receive({ type: "tick", n: 3, cursor: cursor({ a: 3 }) });
  assert.deepEqual(got, [1, 2, 3]);
});

test("a node behind on some origin never pulls the cursor back", async () => {
  const { herald, sockets } = await client();
  sockets[0].accept();
  sockets[0].receive({ type: "tick", cursor: cursor({ a: 5, b: 9 }) });
  sockets[0].receive({ type: "tick", cursor: cursor({ a: 6, b: 2 }) });
  assert.deepEqual([...decodeCursor(herald.cursor)].sort(), [["a", 6], ["b", 9]]);
});

test("drops a repeated event id", async () => {
  const { herald, sockets } = await client();
  const got = [];
  herald.on("message", (m) => got.push(m.id));
  sockets[0].accept();
  sockets[0].receive({ type: "typing", id: "x" });
  sockets[0].receive({ type: "typing", id: "x" });
  sockets[0].receive({ type: "typing", id: "y" });
  assert.deepEqual(got, ["x", "y"]);
});

test("fails over in order when nodes are unreachable, backing off with jitter", async () => {
  const { clock, sockets } = await client();
  // Never opened: unreachable.
  sockets[0].drop(1006);
  assert.deepEqual(clock.pending(), [125], "attempt 0: 0.5 * 250");
  await clock.advance(125);
  assert.equal(sockets[1].url.origin, "ws://b:2");
  sockets[1].drop(1006);
  assert.deepEqual(clock.pending(), [250], "attempt 1: 0.5 * 500");
  await clock.advance(250);
  assert.equal(sockets[2].url.origin, "ws://c:3");
  sockets[2].drop(1006);
  await clock.advance(500);
  assert.equal(sockets[3].url.origin, "ws://a:1", "round robin");
  // A connection resets the schedule.
  sockets[3].accept();
  sockets[3].drop(1011);
  assert.deepEqual(clock.pending(), [125]);
  await clock.advance(125);
  assert.equal(sockets[4].url.origin, "ws://a:1", "an opened node that failed otherwise is retried");
});

test("answers heartbeats, pings a quiet server, and takes a silent one for dead after 2.5 intervals", async () => {
  const { herald, clock, sockets } = await client();
  sockets[0].accept({ heartbeat_ms: 1000 });
  sockets[0].receive({ type: "heartbeat" });
  assert.deepEqual(sockets[0].sent, ['{"type":"ping"}']);
  sockets[0].receive("ping");
  assert.equal(sockets[0].sent.at(-1), "pong");
  // One interval without a word: the client asks.
  await clock.advance(1000);
  assert.deepEqual(sockets[0].sent.slice(2), ['{"type":"ping"}']);
  await clock.advance(1400);
  assert.equal(herald.state, "connected");
  await clock.advance(200);
  assert.equal(herald.state, "reconnecting");
  assert.equal(sockets[0].closed.code, 4000);
  await clock.advance(10_000);
  assert.equal(sockets[1].url.origin, "ws://b:2", "a dead node is left for the next");
});

test("a node that never says connected is left after the connect timeout", async () => {
  const { herald, clock, sockets } = await client({ connectTimeout: 3000 });
  sockets[0].open();
  await clock.advance(2900);
  assert.equal(sockets.length, 1);
  await clock.advance(100);
  assert.equal(sockets[0].closed.code, 4000);
  await clock.advance(10_000);
  assert.equal(sockets[1].url.origin, "ws://b:2");
  assert.equal(herald.state, "connecting");
});

test("any word from the server keeps the connection alive", async () => {
  const { herald, clock, sockets } = await client();
  sockets[0].accept({ heartbeat_ms: 1000 });
  for (let i = 0; i < 10; i++) {
    await clock.advance(900);
    sockets[0].receive({ type: "tick", cursor: cursor({ a: i + 1 }) });
  }
  assert.equal(herald.state, "connected");
  assert.equal(sockets.length, 1);
});

test("on 1008 fetches one fresh token, and stops when it is refused again", async () => {
  let issued = 0;
  const { herald, sockets } = await client({ token: async () => `t${++issued}` });
  assert.equal(sockets[0].url.searchParams.get("token"), "t1");
  sockets[0].open();
  sockets[0].drop(1008, "token expired");
  await flush();
  assert.equal(sockets.length, 2, "reconnected at once");
  assert.equal(sockets[1].url.searchParams.get("token"), "t2");
  assert.equal(sockets[1].url.origin, "ws://a:1", "same node");
  const states = [];
  herald.on("state", (s) => states.push(s));
  sockets[1].open();
  sockets[1].drop(1008, "invalid token");
  await flush();
  assert.equal(herald.state, "closed");
  assert.deepEqual(states, [{ state: "closed", reason: "refused by the server: invalid token" }]);
  assert.equal(sockets.length, 2, "no further attempt");
});

test("a token refresh is allowed again after a successful connection", async () => {
  let issued = 0;
  const { herald, sockets } = await client({ token: () => `t${++issued}` });
  sockets[0].open();
  sockets[0].drop(1008);
  await flush();
  sockets[1].accept();
  sockets[1].drop(1008);
  await flush();
  assert.equal(sockets.length, 3);
  assert.notEqual(herald.state, "closed");
});

test("surfaces recovered:false so the application can reload", async () => {
  const { herald, clock, sockets } = await client({ cursor: cursor({ a: 3 }) });
  const recovered = [];
  herald.on("recovered", (r) => recovered.push(r));
  assert.equal(sockets[0].url.searchParams.get("since"), cursor({ a: 3 }));
  sockets[0].accept();
  const lost = { type: "recovered", recovered: false, replayed: 0, cursor: cursor({ a: 90 }), channels_lost: ["news"] };
  sockets[0].receive(lost);
  assert.deepEqual(recovered, [lost]);
  assert.equal(herald.cursor, cursor({ a: 90 }));
  sockets[0].drop(1001);
  await clock.advance(10_000);
  assert.equal(sockets[1].url.searchParams.get("since"), cursor({ a: 90 }));
});

test("send works only while connected", async () => {
  const { herald, sockets } = await client();
  assert.equal(herald.send({ type: "typing" }), false);
  sockets[0].accept();
  assert.equal(herald.send({ type: "typing", is_typing: true }), true);
  assert.deepEqual(sockets[0].sent, ['{"type":"typing","is_typing":true}']);
});

test("cursors: herald's format, comparison and merge", () => {
  // The same bytes herald's Rust side encodes for {n1: 17, node-b: 3}.
  assert.equal(cursor({ n1: 17, "node-b": 3 }), "aDF8bjE6MTcsbm9kZS1iOjM");
  assert.ok(isAhead(cursor({ a: 2 }), cursor({ a: 1 })));
  assert.ok(!isAhead(cursor({ a: 1 }), cursor({ a: 1, b: 4 })));
  assert.ok(isAhead(cursor({ c: 1 }), cursor({ a: 1 })));
  assert.equal(mergeCursors(null, cursor({ a: 1 })), cursor({ a: 1 }));
  assert.equal(mergeCursors(cursor({ a: 3 }), cursor({ a: 1, b: 2 })), cursor({ a: 3, b: 2 }));
});

test("refuses to start without nodes", () => {
  assert.throws(() => new HeraldClient({ urls: [], WebSocket: class {} }), /needs urls/);
});
