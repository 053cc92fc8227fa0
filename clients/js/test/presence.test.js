// herald-client's presence under node's test runner: the presence messages of the socket, and
// presence() / presenceCount() against a fake fetch, with the fakes of fakes.js.

import { test } from "node:test";
import assert from "node:assert/strict";

import * as shared from "../testing/fakes.js";

const { cursor, flush } = shared;

/**
 * A fetch that answers from `answer(url)`: `{status, body}` (body as JSON, or a string as it
 * is), an Error to throw (the node is unreachable), or "hang" (it never answers). Every call is
 * kept in `calls`.
 */
function fakeFetch(answer) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, ...init });
    const reply = answer(new URL(url));
    if (reply instanceof Error) throw reply;
    if (reply === "hang") {
      return new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(new Error("aborted"))));
    }
    const text = typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
    return { status: reply.status, text: async () => text };
  };
  return { fetch, calls };
}

/** A client on three fake nodes, on a presence channel. */
const client = (options = {}) => shared.client({ channels: ["track:42"], ...options });

/** Both streams of a client: every "message" type and every "presence" event. */
function record(herald) {
  const messages = [];
  const presence = [];
  herald.on("message", (m) => messages.push(m.type));
  herald.on("presence", (p) => presence.push(p));
  return { messages, presence };
}

const ann = { user_id: "u1", name: "Ann" };
const bo = { user_id: "u2", name: "Bo" };
const snapshot = {
  status: "success",
  channel: "track:42",
  count: 2,
  users: [
    { ...ann, connections: 2 },
    { ...bo, connections: 1 },
  ],
  truncated: false,
};
const ok = (body) => ({ status: 200, body });
const refused = (status, message) => ({ status, body: { status: "error", message } });

test("presence_join and presence_leave come as presence, and still as message", async () => {
  const { herald, sockets } = await client();
  const { messages, presence } = record(herald);
  sockets[0].accept();
  sockets[0].receive({ type: "presence_join", channel: "track:42", user: ann });
  sockets[0].receive({ type: "presence_leave", channel: "track:42", user: ann });
  assert.deepEqual(messages, ["presence_join", "presence_leave"]);
  assert.deepEqual(presence, [
    { type: "join", channel: "track:42", user: ann },
    { type: "leave", channel: "track:42", user: ann },
  ]);
});

test("messages without a cursor pass the duplicate check, however far the cursor is", async () => {
  const { herald, sockets } = await client();
  const { messages, presence } = record(herald);
  sockets[0].accept();
  sockets[0].receive({ type: "tick", cursor: cursor({ a: 5 }) });
  const held = herald.cursor;
  sockets[0].receive({ type: "presence_join", channel: "track:42", user: ann });
  sockets[0].receive({ type: "user_typing", user_id: "u1", username: "Ann", is_typing: true, track_id: 42 });
  sockets[0].receive({ type: "user_typing", user_id: "u1", username: "Ann", is_typing: true, track_id: 42 });
  sockets[0].receive({ type: "presence_join", channel: "track:42", user: ann });
  sockets[0].receive({ type: "tick", cursor: cursor({ a: 5 }) });
  sockets[0].receive({ type: "presence_leave", channel: "track:42", user: ann });
  assert.deepEqual(messages, [
    "tick",
    "presence_join",
    "user_typing",
    "user_typing",
    "presence_join",
    "presence_leave",
  ], "only the event already held is dropped");
  assert.deepEqual(presence.map((p) => p.type), ["join", "join", "leave"]);
  assert.equal(herald.cursor, held, "cursor-less messages leave the cursor alone");
});

test("the snapshot after connected comes as presence, and still as message", async () => {
  const { herald, sockets } = await client({ path: "/api/ws/track/42", channels: [] });
  const { messages, presence } = record(herald);
  sockets[0].accept();
  const { status: _, ...message } = snapshot;
  sockets[0].receive({ type: "presence", ...message });
  assert.deepEqual(messages, ["presence"]);
  assert.deepEqual(presence, [
    { type: "snapshot", channel: "track:42", count: 2, users: snapshot.users, truncated: false },
  ]);
  sockets[0].receive({ type: "presence", channel: "track:42", count: 1500, users: [], truncated: true });
  assert.deepEqual(presence[1], { type: "snapshot", channel: "track:42", count: 1500, users: [], truncated: true });
});

test("an event published with a presence type (it has a cursor) is only a message", async () => {
  const { herald, sockets } = await client();
  const { messages, presence } = record(herald);
  sockets[0].accept();
  sockets[0].receive({ type: "presence_join", channel: "track:42", user: bo, cursor: cursor({ a: 1 }) });
  sockets[0].receive({ type: "presence_join", channel: "track:42" });
  assert.deepEqual(messages, ["presence_join", "presence_join"]);
  assert.deepEqual(presence, [], "a published one, then one naming no user");
});

test("presence: false goes in the socket URL; by default nothing does", async () => {
  const quiet = await client({ presence: false });
  assert.equal(quiet.sockets[0].url.searchParams.get("presence"), "false");
  quiet.sockets[0].drop(1012);
  await quiet.clock.advance(10_000);
  assert.equal(quiet.sockets[1].url.searchParams.get("presence"), "false", "and on every reconnect");
  const plain = await client();
  assert.equal(plain.sockets[0].url.searchParams.has("presence"), false);
  const announced = await client({ presence: true });
  assert.equal(announced.sockets[0].url.searchParams.has("presence"), false);
});

test("presence() asks the node in use over HTTP, with the token as a bearer", async () => {
  const { fetch, calls } = fakeFetch(() => ok(snapshot));
  const { herald } = await client({ urls: ["ws://a:1/ws?x=1", "wss://b/herald"], fetch });
  assert.deepEqual(await herald.presence("track:42"), {
    channel: "track:42",
    count: 2,
    users: snapshot.users,
    truncated: false,
  });
  assert.equal(calls[0].url, "http://a:1/api/channels/track%3A42/presence");
  assert.equal(calls[0].method, "GET");
  assert.equal(calls[0].headers.Authorization, "Bearer t0");
  // wss: becomes https: (and the path goes), on the node the client moved to.
  const second = await client({ urls: ["ws://a:1", "wss://b/herald"], fetch });
  second.sockets[0].drop(1006);
  await second.clock.advance(1000);
  assert.equal(second.herald.url, "wss://b/herald");
  await second.herald.presence("a/b c");
  assert.equal(calls[1].url, "https://b/api/channels/a%2Fb%20c/presence");
  // http(s): stays.
  const third = await client({ urls: ["https://c:8443"], fetch });
  await third.herald.presence("news");
  assert.equal(calls[2].url, "https://c:8443/api/channels/news/presence");
});

test("presenceCount() answers the count, with a token from an async function", async () => {
  let issued = 0;
  const { fetch, calls } = fakeFetch(() => ok({ status: "success", channel: "track:42", count: 7 }));
  const { herald } = await client({ urls: ["wss://a"], token: async () => `t${++issued}`, fetch });
  assert.equal(await herald.presenceCount("track:42"), 7);
  assert.equal(calls[0].url, "https://a/api/channels/track%3A42/presence/count");
  assert.equal(calls[0].headers.Authorization, `Bearer t${issued}`, "a fresh token per request");
});

test("no token: no Authorization header", async () => {
  const { fetch, calls } = fakeFetch(() => ok({ status: "success", channel: "x", count: 0 }));
  const { herald } = await client({ token: undefined, fetch });
  assert.equal(await herald.presenceCount("x"), 0);
  assert.equal("Authorization" in calls[0].headers, false);
});

test("a node that does not answer (network error, 502/503/504, timeout) sends it to the next", async () => {
  const { fetch, calls } = fakeFetch((url) => {
    if (url.host === "a:1") return new TypeError("fetch failed");
    if (url.host === "b:2") return { status: 503, body: "<html>Service Unavailable</html>" };
    return ok(snapshot);
  });
  const { herald } = await client({ fetch });
  assert.equal((await herald.presence("track:42")).count, 2);
  assert.deepEqual(calls.map((c) => new URL(c.url).host), ["a:1", "b:2", "c:3"]);

  const gateway = fakeFetch((url) => (url.host === "a:1" ? { status: 504, body: "" } : ok(snapshot)));
  const { herald: other } = await client({ fetch: gateway.fetch });
  assert.equal((await other.presence("track:42")).count, 2);
  assert.deepEqual(gateway.calls.map((c) => new URL(c.url).host), ["a:1", "b:2"]);
});

test("a node silent past connectTimeout is left for the next, its request aborted", async () => {
  const { fetch, calls } = fakeFetch((url) => (url.host === "a:1" ? "hang" : ok(snapshot)));
  const { herald, clock } = await client({ fetch, connectTimeout: 3000 });
  const answer = herald.presence("track:42");
  await flush();
  await clock.advance(2900);
  assert.equal(calls.length, 1);
  await clock.advance(100);
  assert.equal((await answer).count, 2);
  assert.equal(calls[0].signal.aborted, true);
  // The socket gave up on a:1 at the same moment; the request still goes to b:2, once.
  assert.equal(new URL(calls[1].url).host, "b:2");
});

test("herald's error answer rejects with its message and status, and is not retried elsewhere", async () => {
  const { fetch, calls } = fakeFetch((url) =>
    url.pathname.endsWith("/count") ? refused(400, "invalid channel name") : refused(403, "not a member of track:42"),
  );
  const { herald } = await client({ fetch });
  await assert.rejects(herald.presence("track:42"), (error) => {
    assert.ok(error instanceof Error);
    assert.equal(error.message, "not a member of track:42");
    assert.equal(error.status, 403);
    return true;
  });
  await assert.rejects(herald.presenceCount("bad name!"), { message: "invalid channel name", status: 400 });
  assert.equal(calls.length, 2, "one node each");
  // An error answer without herald's body still carries its status.
  const proxy = fakeFetch(() => ({ status: 404, body: "Not Found" }));
  const { herald: other } = await client({ fetch: proxy.fetch });
  await assert.rejects(other.presence("x"), { status: 404 });
});

test("when no node answers, every node is asked once and the last failure is told", async () => {
  const down = fakeFetch(() => new TypeError("fetch failed"));
  const { herald } = await client({ fetch: down.fetch });
  await assert.rejects(herald.presence("track:42"), /no herald node answered: fetch failed/);
  assert.equal(down.calls.length, 3);
  const draining = fakeFetch(() => refused(503, "service unavailable"));
  const { herald: other } = await client({ fetch: draining.fetch });
  await assert.rejects(other.presenceCount("track:42"), { message: "service unavailable", status: 503 });
  assert.equal(draining.calls.length, 3);
});

test("a token that cannot be had rejects the request", async () => {
  const { fetch, calls } = fakeFetch(() => ok(snapshot));
  const { herald } = await client({
    token: async () => {
      throw new Error("signed out");
    },
    fetch,
  });
  await assert.rejects(herald.presence("track:42"), /signed out/);
  assert.equal(calls.length, 0);
  await assert.rejects(herald.presence(""), TypeError);
});

test("fetch is called as a plain function, and its absence is a clear TypeError", async () => {
  let self = "unset";
  const { herald } = await client({
    fetch: function (url) {
      self = this;
      return Promise.resolve({ status: 200, text: async () => JSON.stringify(snapshot) });
    },
  });
  await herald.presence("track:42");
  assert.equal(self, undefined, "not as a method of the client (browsers refuse that)");

  const saved = globalThis.fetch;
  globalThis.fetch = undefined;
  let bare;
  try {
    ({ herald: bare } = await client());
  } finally {
    globalThis.fetch = saved;
  }
  await assert.rejects(bare.presence("track:42"), { name: "TypeError", message: /pass options\.fetch/ });
});
