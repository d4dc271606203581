/**
 * Reads a request's body only when a route asks for it, and then within `timeoutMs` (else `408
 * BODY_TIMEOUT`), at most the route's size (else `413`) and within the instance's budget for
 * buffered bodies (else `503 BODY_BUDGET_EXHAUSTED` with `Retry-After`).
 *
 * Why deferred: a body read ahead of the routes cost up to `maxBytes` per connection before
 * anyone was checked (issue 25, finding 1: 400 connections × 1 MB without credentials grew an
 * instance by 490 MB). Now a request is routed and its caller checked first (the one guard
 * order, shared/app.ts); the body is read by the route's `bodyLimit` (shared/body_limit.ts), so
 * a wrong method, missing or bad credentials, a rate limit or a declared `Content-Length` above
 * the route's limit is refused without buffering a byte. A route that reads the body without
 * `bodyLimit` reads it here too, at the function-wide `maxBytes`.
 *
 * A slow sender holds only its own socket: while the body arrives the request does not count as
 * work for load shedding (shared/load_shed.ts). A client that hangs up mid-body gets `400
 * BODY_INCOMPLETE` in the access log, not an unhandled error. An answer sent while the body has
 * not been fully read (a `408`, a `401` before the body…) says `Connection: close`, and the
 * server drops the connection (`PendingBody.close`): at once when bytes of the body are there,
 * else at the client's next byte, so a slow client that keeps sending is disconnected. Known
 * limit (docs/security.md): a client that sends nothing more keeps its socket until it leaves;
 * Deno.serve holds a connection while a read of its body is pending, and no cancel ends it.
 *
 * Every later reader sees the buffered bytes: Hono's body methods (`c.req.text()`, `json()`,
 * `arrayBuffer()`…, Stripe's raw-body check) are served them from Hono's body cache. A body sent
 * without `Content-Length` is also put back on `c.req.raw`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { BodyBudget, bodyDeadline } from "./body_deadline.ts";
 *
 * const app = new Hono();
 * app.use(bodyDeadline({ timeoutMs: 10_000, maxBytes: 1 << 20, budget: new BodyBudget(32 << 20) }));
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import { BodyIncomplete, BodyTimeout, PayloadTooLarge, ServiceUnavailable } from "../errors.ts";
import { uncounted } from "./load_shed.ts";

export interface BodyDeadlineOptions {
  /** How long the whole body may take to arrive. */
  timeoutMs: number;
  /** The largest body any route of the function takes (routes apply their own, smaller limits). */
  maxBytes: number;
  /** The bytes all bodies buffered at once in this instance may take (shared by its functions). */
  budget?: BodyBudget;
}

/** The bytes of request bodies an instance may hold at once; shared by every function it runs. */
export class BodyBudget {
  #used = 0;
  constructor(readonly capacityBytes: number) {
    if (!(capacityBytes > 0)) {
      throw new Error(`BodyBudget needs a positive size, got ${capacityBytes}`);
    }
  }
  /** Bytes held now. */
  get usedBytes(): number {
    return this.#used;
  }
  /** Takes `bytes` if they fit; false (nothing taken) if not. */
  take(bytes: number): boolean {
    if (this.#used + bytes > this.capacityBytes) return false;
    this.#used += bytes;
    return true;
  }
  /** Gives back bytes taken. */
  give(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

/** Buffers the request's body for the route: at most `maxBytes`, within the deadline. */
export async function readBody(c: Context, maxBytes: number): Promise<void> {
  const pending = bodies.get(c);
  if (pending) await pending.read(c, maxBytes);
}

/** Whether `c`'s body is read when a route asks (the standard stack is in place). */
export function bodyIsDeferred(c: Context): boolean {
  return bodies.has(c);
}

const bodies = new WeakMap<Context, PendingBody>();

export function bodyDeadline(opts: BodyDeadlineOptions): MiddlewareHandler {
  const { timeoutMs, maxBytes, budget } = opts;
  if (!(timeoutMs > 0 && maxBytes > 0)) {
    throw new Error(
      `bodyDeadline needs a positive timeout and size, got ${timeoutMs}, ${maxBytes}`,
    );
  }
  return async function readBodyInTime(c, next) {
    const raw = c.req.raw;
    // No body, or an empty one (a POST with `Content-Length: 0`): nothing to read or to close.
    if (!raw.body || raw.headers.get("content-length") === "0") return await next();
    const pending = new PendingBody(raw, timeoutMs, maxBytes, budget);
    bodies.set(c, pending);
    // A reader that skips `bodyLimit` (c.req.text() straight away) still reads through here.
    const cache = c.req.bodyCache as Record<string, Promise<unknown>>;
    for (const key of ["arrayBuffer", "text"] as const) {
      Object.defineProperty(cache, key, {
        configurable: true,
        enumerable: true,
        get: () => pending.read(c, maxBytes).then(() => cache[key]),
      });
    }
    try {
      await next();
    } finally {
      pending.release();
    }
    if (!pending.complete) {
      // Unread or cut short: the connection carries bytes nobody will read. Close it.
      c.res.headers.set("connection", "close");
      pending.close();
    }
  };
}

const decoder = new TextDecoder();

/** One request's body: read once, on demand; its budget share given back when it is done. */
class PendingBody {
  #reading?: Promise<void>;
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #taken = 0;
  /** The body's stream, kept: once the answer is handed over, `raw.body` can no longer be read. */
  readonly #stream: ReadableStream<Uint8Array>;
  complete = false;

  constructor(
    private readonly raw: Request,
    private readonly timeoutMs: number,
    private readonly maxBytes: number,
    private readonly budget: BodyBudget | undefined,
  ) {
    this.#stream = raw.body!;
  }

  read(c: Context, maxBytes: number): Promise<void> {
    const limit = Math.min(maxBytes, this.maxBytes);
    const declared = Number(this.raw.headers.get("content-length") ?? NaN);
    if (declared > limit) return Promise.reject(new PayloadTooLarge(limit));
    this.#reading ??= uncounted(c, () => this.#read(c, limit, declared));
    return this.#reading;
  }

  async #read(c: Context, limit: number, declared: number): Promise<void> {
    if (declared > 0) this.#take(declared);
    const reader = this.#reader = this.#stream.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), this.timeoutMs);
    });
    try {
      while (true) {
        const read = await Promise.race([reader.read(), expired]).catch((err) => {
          throw new BodyIncomplete(err);
        });
        if (read === "expired") throw new BodyTimeout(this.timeoutMs);
        if (read.done) break;
        size += read.value.byteLength;
        if (size > limit) throw new PayloadTooLarge(limit);
        if (size > this.#taken) this.#take(size - this.#taken);
        chunks.push(read.value);
      }
    } finally {
      clearTimeout(timer);
    }
    this.complete = true;
    const body = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      body.set(chunk, at);
      at += chunk.byteLength;
    }
    // Hono keeps its body cache as promises (its types say values): what c.req.text() and
    // c.req.arrayBuffer() return. Decoding as Response.text() does: UTF-8, BOM dropped.
    const cache = c.req.bodyCache as Record<string, Promise<unknown>>;
    for (const key of ["arrayBuffer", "text"]) delete cache[key];
    cache.arrayBuffer = Promise.resolve(body.buffer);
    cache.text = Promise.resolve(decoder.decode(body));
    if (!this.raw.headers.has("content-length")) c.req.raw = new Request(this.raw, { body });
  }

  #take(bytes: number): void {
    if (!this.budget) return;
    if (!this.budget.take(bytes)) {
      throw new ServiceUnavailable(
        "BODY_BUDGET_EXHAUSTED",
        "This instance holds as many request bodies as it can; nothing was done.",
        1000,
      );
    }
    this.#taken += bytes;
  }

  /** Gives the budget back (the request is answered; its body is garbage). */
  release(): void {
    this.budget?.give(this.#taken);
    this.#taken = 0;
  }

  /**
   * Lets the connection go, as far as Deno.serve allows: it drops a connection whose body is
   * cancelled once a read of it has completed and the answer has been handed over (a cancel
   * before the answer, or of a body never read, leaves it waiting for the client). So: a body
   * never read gets one read now, before the answer leaves (after it, the body can no longer be
   * read); the cancel follows the answer. A read still pending (a `408`'s, or this one when the
   * client sends nothing) completes when the client's next byte arrives: a client that keeps
   * sending is disconnected then; one that sends nothing more keeps its socket until it leaves.
   */
  close(): void {
    try {
      let read: Promise<unknown> = Promise.resolve();
      if (!this.#reader) {
        this.#reader = this.#stream.getReader();
        read = this.#reader.read().catch(() => {});
      }
      const reader = this.#reader;
      setTimeout(() => void read.then(() => reader.cancel()).catch(() => {}), 0);
    } catch { /* the server has already closed the request */ }
  }
}
