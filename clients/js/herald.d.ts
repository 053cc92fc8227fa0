// Type declarations for herald-client (herald.js).

export type State = "connecting" | "connected" | "reconnecting" | "closed";

export interface HeraldClientOptions {
  /** Node addresses (http(s):// or ws(s)://); the client fails over between them in order. */
  urls: string[];
  /** The socket path: "/ws" (default), "/api/creator/broadcast/ws", "/api/ws/track/42", ... */
  path?: string;
  /** Channels to subscribe to (for /ws), sent as ?channel=. */
  channels?: string[];
  /** A user token, or a function answering one, called before every (re)connect and every
   *  presence request (sent there as `Authorization: Bearer`). */
  token?: string | (() => string | Promise<string>);
  /** Resume from this cursor (for example one kept in localStorage). */
  cursor?: string | null;
  /** More query parameters for the socket URL. */
  params?: Record<string, string>;
  /** First reconnect delay ceiling in ms (default 250); doubles per attempt. */
  initialBackoff?: number;
  /** Largest reconnect delay ceiling in ms (default 10000). */
  maxBackoff?: number;
  /** Heartbeat interval in ms until the server announces its own (default 30000); a server
   *  silent for 2.5 intervals is taken for dead. */
  heartbeat?: number;
  /** How long a node gets to say `connected`, or to answer a presence request, before the
   *  client tries the next (default 5000). */
  connectTimeout?: number;
  /** false: the server does not announce this socket's user in presence (bots, backends);
   *  sent as ?presence=false. Default true (announced). */
  presence?: boolean;
  /** A WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocketLike;
  /** A fetch implementation for presence() and presenceCount() (default: globalThis.fetch).
   *  Without one they reject with a TypeError. */
  fetch?: FetchLike;
  /** Timers (for tests). */
  timers?: { setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout };
  /** A source of numbers in [0, 1) for the jitter (for tests). */
  random?: () => number;
}

export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

/** What the client needs of fetch: `typeof fetch` is one. */
export type FetchLike = (
  url: string,
  init: { method: "GET"; headers: Record<string, string>; signal?: AbortSignal },
) => Promise<{ status: number; text(): Promise<string> }>;

/** An event or server message, as JSON. Events carry `cursor`; ephemeral messages (presence,
 *  `user_typing`) carry none and are never dropped as duplicates by cursor. */
export type HeraldMessage = { type?: string; cursor?: string; id?: string; [key: string]: unknown };

/** The server's `recovered` message after a resume, as it came. */
export interface Recovered {
  type: "recovered";
  recovered: boolean;
  replayed: number;
  cursor: string;
  channels_lost?: string[];
}

/** A user as presence names it. */
export interface PresenceUser {
  user_id: string;
  name: string;
}

/** A user on a channel, with how many sockets it holds there across the cluster. */
export interface PresenceMember extends PresenceUser {
  connections: number;
}

/** Who is on a channel, cluster-wide. */
export interface Presence {
  channel: string;
  /** Users on the channel, all of them (more than `users` lists when `truncated`). */
  count: number;
  users: PresenceMember[];
  /** Whether the server listed only some of the users. */
  truncated: boolean;
}

/** The "presence" event: a user came (`presence_join`) or went (`presence_leave`), or the
 *  snapshot a socket sends right after `connected` (`presence`; the track comments socket). */
export type PresenceEvent =
  | { type: "join" | "leave"; channel: string; user: PresenceUser }
  | ({ type: "snapshot" } & Presence);

/** How presence() and presenceCount() reject when herald answers an error (the message is
 *  herald's, `status` the HTTP status) or no node answers (`status` is then the last node's
 *  502, 503 or 504, when the last one answered that rather than not at all). */
export interface HeraldRequestError extends Error {
  status?: number;
}

export class HeraldClient {
  constructor(options: HeraldClientOptions);
  /** The newest cursor: persist it to resume after a reload. */
  readonly cursor: string | null;
  readonly state: State;
  /** The node address in use (or tried next). */
  readonly url: string;
  on(event: "message", listener: (message: HeraldMessage) => void): () => void;
  /** Presence messages, also delivered as "message". */
  on(event: "presence", listener: (event: PresenceEvent) => void): () => void;
  on(event: "recovered", listener: (info: Recovered) => void): () => void;
  on(event: "state", listener: (state: State | { state: State; reason: string }) => void): () => void;
  on(event: "connected", listener: (message: HeraldMessage) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  off(event: string, listener: (value: any) => void): void;
  /** Sends a message (objects as JSON); false when not connected. */
  send(message: object | string): boolean;
  /** Closes the connection for good (state "closed"). */
  close(): void;
  /** Who is on `channel`: GET /api/channels/{channel}/presence with the token as a bearer, at
   *  the node in use (http(s) for ws(s)); on a network error, a timeout or 502/503/504 at the
   *  next node, each once. Rejects with a HeraldRequestError (a TypeError for an empty channel
   *  or without fetch; the token function's own error when it throws). */
  presence(channel: string): Promise<Presence>;
  /** How many users are on `channel`: GET /api/channels/{channel}/presence/count, as presence(). */
  presenceCount(channel: string): Promise<number>;
}

/** The reconnect delay of attempt `attempt` (from 0): random() * min(max, initial * 2^attempt). */
export function backoff(attempt: number, initial: number, max: number, random?: () => number): number;
export function decodeCursor(cursor: string): Map<string, number>;
export function encodeCursor(vector: Map<string, number>): string;
export function mergeCursors(a: string | null, b: string): string;
export function isAhead(a: string, b: string | null): boolean;
