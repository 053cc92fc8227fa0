// herald-client: a WebSocket client for herald that fails over between nodes and resumes
// exactly once with cursors. No dependencies; runs in browsers and in Node (pass a WebSocket
// implementation there).
//
// Every event herald delivers carries `cursor`, the subscription's position after it (a version
// vector). The client keeps the newest one and sends it as `?since=` on every reconnect, to
// whichever node it reaches, so the server replays exactly what was missed. As a second line of
// defence it drops an event whose cursor it already holds (and one whose `id` it delivered
// recently).
//
// Presence (who is on a channel, cluster-wide) comes as server messages without `cursor` or
// `id` (never stored, never replayed): `presence_join` and `presence_leave` as users come and
// go, and on some sockets a `presence` snapshot right after `connected`. They are delivered as
// "message" like everything else, and again as "presence" ({type: "join" | "leave" |
// "snapshot", ...}). `presence()` and `presenceCount()` ask the HTTP API of the node in use
// (the next ones while nodes do not answer). `presence: false` keeps a socket's user out of
// presence (bots, backends).

const DEFAULTS = {
  path: "/ws",
  initialBackoff: 250,
  maxBackoff: 10_000,
  // Until the server says otherwise in `connected` (`heartbeat_ms`).
  heartbeat: 30_000,
  // A node that has not said `connected` within this long is given up on.
  connectTimeout: 5_000,
  // false: the server does not announce this socket's user on its channels.
  presence: true,
};

/// Silent heartbeat intervals after which a server is taken for dead.
const SILENT_INTERVALS = 2.5;
/// Ids of delivered events remembered for the duplicate check.
const REMEMBERED_IDS = 1024;
/// WebSocket close codes that send the client to another node.
const MOVE_ON = new Set([1001, 1006, 1012, 1013]);
const POLICY_VIOLATION = 1008;
/// HTTP statuses that say a node did not answer itself (a proxy in front of one that is down,
/// or herald unable to serve for now): the request goes to the next node.
const NOT_ANSWERED = new Set([502, 503, 504]);
/// Presence server messages, and the type of the "presence" event each becomes.
const PRESENCE_CHANGES = new Map([
  ["presence_join", "join"],
  ["presence_leave", "leave"],
]);

export class HeraldClient {
  #options;
  #WebSocket;
  #fetch;
  #timers;
  #random;
  #listeners = new Map();
  #socket = null;
  #state = "connecting";
  #cursor = null;
  #urlIndex = 0;
  #attempt = 0;
  #everConnected = false;
  #tokenRefreshed = false;
  #closed = false;
  #heartbeat;
  #silenceTimer = null;
  #retryTimer = null;
  #recentIds = new Set();

  /**
   * @param {object} options see herald.d.ts
   */
  constructor(options) {
    const urls = Array.isArray(options?.urls) ? options.urls : [options?.url].filter(Boolean);
    if (urls.length === 0) {
      throw new TypeError("HeraldClient needs urls: one or more node addresses");
    }
    this.#options = { ...DEFAULTS, ...options, urls };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    // Checked when first used: only the presence requests need it. Wrapped: browsers refuse
    // fetch called as a method of another object.
    const fetch = options.fetch ?? globalThis.fetch;
    this.#fetch = typeof fetch === "function" ? (url, init) => fetch(url, init) : null;
    // Wrapped: browsers refuse setTimeout called as a method of another object.
    this.#timers = options.timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
    };
    this.#random = options.random ?? Math.random;
    this.#heartbeat = this.#options.heartbeat;
    this.#cursor = options.cursor || null;
    this.#connect();
  }

  /** The newest cursor: persist it to resume after a reload. */
  get cursor() {
    return this.#cursor;
  }

  /** "connecting" | "connected" | "reconnecting" | "closed" */
  get state() {
    return this.#state;
  }

  /** The node address in use (or tried next). */
  get url() {
    return this.#options.urls[this.#urlIndex];
  }

  /**
   * Listens to "message", "presence", "recovered", "state", "connected" or "error"; answers a
   * function that stops listening.
   */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Sends a message (an object is sent as JSON); answers false when not connected. */
  send(message) {
    if (this.#state !== "connected" || !this.#socket) return false;
    this.#socket.send(typeof message === "string" ? message : JSON.stringify(message));
    return true;
  }

  /** Closes the connection for good. */
  close() {
    this.#finish("closed by the application");
  }

  /**
   * Who is on `channel`, cluster-wide: `{channel, count, users, truncated}` from
   * `GET /api/channels/{channel}/presence`.
   * @param {string} channel
   */
  async presence(channel) {
    const body = await this.#request(presencePath(channel));
    return presenceSnapshot(body, channel);
  }

  /**
   * How many users are on `channel`, cluster-wide: `count` from
   * `GET /api/channels/{channel}/presence/count`.
   * @param {string} channel
   */
  async presenceCount(channel) {
    const body = await this.#request(`${presencePath(channel)}/count`);
    if (!Number.isFinite(body.count)) throw new Error("herald answered a presence count without one");
    return body.count;
  }

  #emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (error) {
        if (event !== "error") this.#emit("error", error);
      }
    }
  }

  #setState(state, reason) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit("state", reason === undefined ? state : { state, reason });
  }

  async #connect() {
    if (this.#closed) return;
    this.#setState(this.#everConnected ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.#token();
    } catch (error) {
      this.#emit("error", error);
      this.#retry(false);
      return;
    }
    if (this.#closed) return;
    const socket = new this.#WebSocket(this.#socketUrl(this.url, token));
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#onMessage(socket, event.data);
    };
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (socket === this.#socket) this.#onClose(event.code, event.reason, opened);
    };
    // A node that does not say `connected` in time is given up on (a host that drops
    // packets would otherwise hold the client for as long as TCP retries).
    if (this.#silenceTimer !== null) this.#timers.clearTimeout(this.#silenceTimer);
    this.#silenceTimer = this.#timers.setTimeout(
      () => this.#giveUp(socket),
      this.#options.connectTimeout,
    );
  }

  /** The token as `options.token` gives it (a function is called every time: it may refresh). */
  async #token() {
    return typeof this.#options.token === "function" ? await this.#options.token() : this.#options.token;
  }

  #socketUrl(base, token) {
    const url = new URL(this.#options.path, base.replace(/^http/, "ws"));
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    for (const channel of this.#options.channels ?? []) url.searchParams.append("channel", channel);
    // Only when asked: the default is the server's (announced).
    if (this.#options.presence === false) url.searchParams.set("presence", "false");
    for (const [key, value] of Object.entries(this.#options.params ?? {})) {
      url.searchParams.set(key, value);
    }
    if (token) url.searchParams.set("token", token);
    if (this.#cursor) url.searchParams.set("since", this.#cursor);
    return url.toString();
  }

  /**
   * Restarts the liveness timers: after one heartbeat interval without a word from the server
   * the client pings it (the server answers at once), and after 2.5 it takes the server for
   * dead, leaves it and goes elsewhere.
   */
  #armSilence() {
    if (this.#silenceTimer !== null) this.#timers.clearTimeout(this.#silenceTimer);
    const socket = this.#socket;
    this.#silenceTimer = this.#timers.setTimeout(() => {
      if (socket === this.#socket && this.#state === "connected") socket.send('{"type":"ping"}');
      this.#silenceTimer = this.#timers.setTimeout(
        () => this.#giveUp(socket),
        this.#heartbeat * (SILENT_INTERVALS - 1),
      );
    }, this.#heartbeat);
  }

  #giveUp(socket) {
    this.#silenceTimer = null;
    if (!socket || socket !== this.#socket) return;
    this.#socket = null;
    try {
      socket.close(4000, "silent");
    } catch {
      // already closing
    }
    this.#moveOn();
    this.#retry(true);
  }

  #onMessage(socket, data) {
    if (this.#state === "connected") this.#armSilence();
    if (data === "ping") {
      socket.send("pong");
      return;
    }
    if (data === "pong") return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message === null || typeof message !== "object") return;
    switch (message.type) {
      case "connected":
        this.#everConnected = true;
        this.#attempt = 0;
        this.#tokenRefreshed = false;
        if (Number.isFinite(message.heartbeat_ms) && message.heartbeat_ms > 0) {
          this.#heartbeat = message.heartbeat_ms;
        }
        if (!this.#cursor && typeof message.cursor === "string") this.#cursor = message.cursor;
        this.#setState("connected");
        this.#armSilence();
        this.#emit("connected", message);
        return;
      case "heartbeat":
        socket.send('{"type":"ping"}');
        return;
      case "pong":
        return;
      case "recovered":
        if (typeof message.cursor === "string") this.#cursor = mergeCursors(this.#cursor, message.cursor);
        this.#emit("recovered", message);
        return;
      default:
        break;
    }
    if (typeof message.cursor === "string") {
      if (this.#cursor && !isAhead(message.cursor, this.#cursor)) return;
      // Merged, never replaced: a node that is behind on some origin must not pull the
      // cursor back (the next resume would replay those events again).
      this.#cursor = mergeCursors(this.#cursor, message.cursor);
    }
    if (typeof message.id === "string") {
      if (this.#recentIds.has(message.id)) return;
      this.#recentIds.add(message.id);
      if (this.#recentIds.size > REMEMBERED_IDS) {
        this.#recentIds.delete(this.#recentIds.values().next().value);
      }
    }
    this.#emit("message", message);
    const presence = presenceEvent(message);
    if (presence) this.#emit("presence", presence);
  }

  #onClose(code, reason, opened) {
    this.#socket = null;
    if (this.#silenceTimer !== null) this.#timers.clearTimeout(this.#silenceTimer);
    this.#silenceTimer = null;
    if (this.#closed) return;
    if (code === POLICY_VIOLATION) {
      if (!this.#tokenRefreshed && typeof this.#options.token === "function") {
        // Perhaps the token expired: one fresh token, at once.
        this.#tokenRefreshed = true;
        this.#connect();
        return;
      }
      this.#finish(`refused by the server: ${reason || "policy violation"}`);
      return;
    }
    if (!opened || MOVE_ON.has(code)) this.#moveOn();
    this.#retry(true);
  }

  /**
   * GETs `path` (`/api/...`) with the token as a bearer, from the node in use and then from the
   * others in turn, each once, while nodes do not answer; answers herald's success body.
   * Rejects with an Error carrying `status` when herald answers an error.
   */
  async #request(path) {
    if (!this.#fetch) throw new TypeError("no fetch implementation: pass options.fetch");
    const token = await this.#token();
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const urls = this.#options.urls;
    // Taken once: the socket may move on meanwhile, and each node is still asked once.
    const first = this.#urlIndex;
    let failure;
    for (let i = 0; i < urls.length; i++) {
      const url = httpUrl(urls[(first + i) % urls.length], path);
      const answer = await this.#get(url, headers);
      if (answer.failure) {
        failure = answer.failure;
        continue;
      }
      if (NOT_ANSWERED.has(answer.status)) {
        failure = answerError(url, answer);
        continue;
      }
      if (answer.status >= 200 && answer.status < 300 && answer.body?.status === "success") {
        return answer.body;
      }
      throw answerError(url, answer);
    }
    // Herald's own word when the last node said one (503 "service unavailable"), else why
    // the last node could not be reached.
    if (failure.status !== undefined) throw failure;
    throw new Error(`no herald node answered: ${failure.message}`, { cause: failure });
  }

  /**
   * One GET from one node: `{status, body}` (body: the parsed JSON, or null), or `{failure}` when
   * the node could not be reached or did not answer within `connectTimeout` (a host that drops
   * packets would otherwise hold the request for as long as TCP retries).
   */
  async #get(url, headers) {
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    let timer = null;
    const timedOut = new Promise((resolve) => {
      timer = this.#timers.setTimeout(() => {
        timer = null;
        controller?.abort();
        const ms = this.#options.connectTimeout;
        resolve({ failure: new Error(`${url} did not answer within ${ms} ms`) });
      }, this.#options.connectTimeout);
    });
    const init = { method: "GET", headers };
    if (controller) init.signal = controller.signal;
    const answered = (async () => {
      try {
        const response = await this.#fetch(url, init);
        return { status: response.status, body: parseJson(await response.text()) };
      } catch (error) {
        return { failure: error };
      }
    })();
    try {
      return await Promise.race([answered, timedOut]);
    } finally {
      if (timer !== null) this.#timers.clearTimeout(timer);
    }
  }

  #moveOn() {
    this.#urlIndex = (this.#urlIndex + 1) % this.#options.urls.length;
  }

  /** Reconnects after a backoff: full jitter, `random * min(max, initial * 2^attempt)`. */
  #retry(countAttempt) {
    if (this.#closed) return;
    this.#setState(this.#everConnected ? "reconnecting" : "connecting");
    const delay = backoff(this.#attempt, this.#options.initialBackoff, this.#options.maxBackoff, this.#random);
    if (countAttempt) this.#attempt += 1;
    if (this.#retryTimer !== null) this.#timers.clearTimeout(this.#retryTimer);
    this.#retryTimer = this.#timers.setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delay);
  }

  #finish(reason) {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of [this.#silenceTimer, this.#retryTimer]) {
      if (timer !== null) this.#timers.clearTimeout(timer);
    }
    this.#silenceTimer = this.#retryTimer = null;
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      try {
        socket.close(1000, "client closed");
      } catch {
        // already closing
      }
    }
    this.#setState("closed", reason);
  }
}

/** The presence path of `channel` (any name: it is encoded). */
function presencePath(channel) {
  if (typeof channel !== "string" || channel === "") {
    throw new TypeError("presence needs a channel name");
  }
  return `/api/channels/${encodeURIComponent(channel)}/presence`;
}

/** `path` at node `base` over HTTP: ws: becomes http:, wss: https:; base's own path goes. */
function httpUrl(base, path) {
  const url = new URL(path, base);
  if (url.protocol === "ws:") url.protocol = "http:";
  if (url.protocol === "wss:") url.protocol = "https:";
  return url.toString();
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The Error of an answer that is not success: herald's message when it gave one, and status. */
function answerError(url, { status, body }) {
  const message =
    body?.status === "error" && typeof body.message === "string"
      ? body.message
      : `${url} answered ${status} without herald's body`;
  return Object.assign(new Error(message), { status });
}

/**
 * A presence snapshot as the socket and the HTTP API both give it, in the shape the types
 * promise (a list, a count, a flag) whatever a node left out.
 */
function presenceSnapshot(body, channel = body.channel) {
  const users = Array.isArray(body.users) ? body.users : [];
  return {
    channel: typeof body.channel === "string" ? body.channel : channel,
    count: Number.isFinite(body.count) ? body.count : users.length,
    users,
    truncated: body.truncated === true,
  };
}

/**
 * The "presence" event of a server message, or null when it is none. Presence is never stored,
 * so it carries no cursor: a message with one is an event someone published with a presence
 * type, and is only a "message".
 */
function presenceEvent(message) {
  if (message.cursor !== undefined || typeof message.channel !== "string") return null;
  if (message.type === "presence") return { type: "snapshot", ...presenceSnapshot(message) };
  const type = PRESENCE_CHANGES.get(message.type);
  if (type === undefined || message.user === null || typeof message.user !== "object") return null;
  return { type, channel: message.channel, user: message.user };
}

/** The delay before reconnect attempt `attempt` (from 0): full jitter under an exponential cap. */
export function backoff(attempt, initial, max, random = Math.random) {
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** A cursor's version vector: origin -> seq. Throws on a cursor that is not herald's. */
export function decodeCursor(cursor) {
  const base64 = cursor.replace(/-/g, "+").replace(/_/g, "/");
  const text = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  if (!text.startsWith("h1|")) throw new Error("not a herald cursor");
  const vector = new Map();
  for (const entry of text.slice(3).split(",")) {
    if (!entry) continue;
    const at = entry.lastIndexOf(":");
    vector.set(entry.slice(0, at), Number(entry.slice(at + 1)));
  }
  return vector;
}

/** Encodes a version vector (origin -> seq) as a herald cursor. */
export function encodeCursor(vector) {
  const entries = [...vector].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const text = "h1|" + entries.map(([origin, seq]) => `${origin}:${seq}`).join(",");
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The pointwise maximum of two cursors (`b` as it is when either is not herald's). */
export function mergeCursors(a, b) {
  if (!a) return b;
  try {
    const merged = decodeCursor(a);
    for (const [origin, seq] of decodeCursor(b)) {
      if (seq > (merged.get(origin) ?? 0)) merged.set(origin, seq);
    }
    return encodeCursor(merged);
  } catch {
    return b;
  }
}

/** Whether cursor `a` holds an event cursor `b` does not (so `a` is news). */
export function isAhead(a, b) {
  if (!b) return true;
  let ahead;
  try {
    const [va, vb] = [decodeCursor(a), decodeCursor(b)];
    ahead = [...va].some(([origin, seq]) => seq > (vb.get(origin) ?? 0));
  } catch {
    ahead = a !== b;
  }
  return ahead;
}
