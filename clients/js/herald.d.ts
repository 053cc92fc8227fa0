// Type declarations for herald-client (herald.js).

export type State = "connecting" | "connected" | "reconnecting" | "closed";

export interface HeraldClientOptions {
  /** Node addresses (http(s):// or ws(s)://); the client fails over between them in order. */
  urls: string[];
  /** The socket path: "/ws" (default), "/api/creator/broadcast/ws", "/api/ws/track/42", ... */
  path?: string;
  /** Channels to subscribe to (for /ws), sent as ?channel=. */
  channels?: string[];
  /** A user token, or a function answering one, called before every (re)connect. */
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
  /** How long a node gets to say `connected` before the client tries the next (default 5000). */
  connectTimeout?: number;
  /** A WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocketLike;
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

/** An event or server message, as JSON. Events carry `cursor`. */
export type HeraldMessage = { type?: string; cursor?: string; id?: string; [key: string]: unknown };

/** The server's `recovered` message after a resume, as it came. */
export interface Recovered {
  type: "recovered";
  recovered: boolean;
  replayed: number;
  cursor: string;
  channels_lost?: string[];
}

export class HeraldClient {
  constructor(options: HeraldClientOptions);
  /** The newest cursor: persist it to resume after a reload. */
  readonly cursor: string | null;
  readonly state: State;
  /** The node address in use (or tried next). */
  readonly url: string;
  on(event: "message", listener: (message: HeraldMessage) => void): () => void;
  on(event: "recovered", listener: (info: Recovered) => void): () => void;
  on(event: "state", listener: (state: State | { state: State; reason: string }) => void): () => void;
  on(event: "connected", listener: (message: HeraldMessage) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  off(event: string, listener: (value: any) => void): void;
  /** Sends a message (objects as JSON); false when not connected. */
  send(message: object | string): boolean;
  /** Closes the connection for good (state "closed"). */
  close(): void;
}

/** The reconnect delay of attempt `attempt` (from 0): random() * min(max, initial * 2^attempt). */
export function backoff(attempt: number, initial: number, max: number, random?: () => number): number;
export function decodeCursor(cursor: string): Map<string, number>;
export function encodeCursor(vector: Map<string, number>): string;
export function mergeCursors(a: string | null, b: string): string;
export function isAhead(a: string, b: string | null): boolean;
