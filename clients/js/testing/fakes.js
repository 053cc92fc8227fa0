// What herald-client's tests share: a clock the test advances, a fake WebSocket that plays
// the server, and a client wired to both.

import { HeraldClient, encodeCursor } from "../herald.js";

/** Timers that run only when the test advances the clock. */
export class Clock {
  now = 0;
  #next = 1;
  #timers = new Map();

  setTimeout = (fn, ms) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** Runs every timer due within `ms`, in order. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.#timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
      await flush();
    }
    this.now = end;
  }

  pending() {
    return [...this.#timers.values()].map((t) => t.at - this.now);
  }
}

export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** Every socket the client opened, newest last. */
export function fakeWebSocket() {
  const sockets = [];
  class FakeSocket {
    onopen = null;
    onmessage = null;
    onerror = null;
    onclose = null;
    sent = [];
    closed = null;
    constructor(url) {
      this.url = new URL(url);
      sockets.push(this);
    }
    send(data) {
      this.sent.push(data);
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // What the server does:
    open() {
      this.onopen?.({});
    }
    receive(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }
    drop(code = 1006, reason = "") {
      this.onclose?.({ code, reason });
    }
    /** Opens and says `connected`. */
    accept(extra = {}) {
      this.open();
      this.receive({ type: "connected", cursor: cursor({}), ...extra });
    }
  }
  return { FakeSocket, sockets };
}

export const cursor = (entries) => encodeCursor(new Map(Object.entries(entries)));

/** A client on three fake nodes (channel `news` unless `options` says otherwise). */
export async function client(options = {}) {
  const clock = new Clock();
  const { FakeSocket, sockets } = fakeWebSocket();
  const herald = new HeraldClient({
    urls: ["http://a:1", "http://b:2", "http://c:3"],
    channels: ["news"],
    token: "t0",
    WebSocket: FakeSocket,
    timers: clock,
    random: () => 0.5,
    ...options,
  });
  await flush();
  return { herald, clock, sockets };
}
