/**
 * Reads a request's body before the request counts as work: within `timeoutMs` (else `408
 * BODY_TIMEOUT` with `Connection: close`), and at most `maxBytes` (else `413`). A client that
 * sends slowly, or stops, holds only its own socket: load shedding (shared/http/load_shed.ts, after
 * this guard) counts requests being worked on, never sockets waiting for bytes. A client that
 * hangs up mid-body gets `400 BODY_INCOMPLETE` in the access log, not an unhandled error.
 *
 * Every later reader sees the buffered bytes: Hono's body methods (`c.req.text()`, `json()`,
 * `arrayBuffer()`…, Stripe's raw-body check) are served them from Hono's body cache. Rebuilding
 * the request around them (`new Request(raw, { body })`) cost more than the rest of this guard
 * put together, so it is done only for a body sent without `Content-Length`, whose stream Hono's
 * body limit reads itself; with `Content-Length` it checks the header, and nothing reads
 * `c.req.raw`'s body after this guard.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { bodyDeadline } from "./body_deadline.ts";
 *
 * const app = new Hono();
 * app.use(bodyDeadline({ timeoutMs: 10_000, maxBytes: 1 << 20 }));
 * ```
 */
import type { MiddlewareHandler } from "hono";
import { BodyIncomplete, BodyTimeout, PayloadTooLarge } from "../errors.ts";

export interface BodyDeadlineOptions {
  /** How long the whole body may take to arrive. */
  timeoutMs: number;
  /** The largest body any route of the function takes (routes apply their own, smaller limits). */
  maxBytes: number;
}

export function bodyDeadline(opts: BodyDeadlineOptions): MiddlewareHandler {
  const { timeoutMs, maxBytes } = opts;
  if (!(timeoutMs > 0 && maxBytes > 0)) {
    throw new Error(
      `bodyDeadline needs a positive timeout and size, got ${timeoutMs}, ${maxBytes}`,
    );
  }
  return async function readBodyInTime(c, next) {
    const raw = c.req.raw;
    if (!raw.body) return await next();
    const declared = Number(raw.headers.get("content-length") ?? NaN);
    if (declared > maxBytes) throw new PayloadTooLarge(maxBytes);
    const body = await readWithin(raw.body, timeoutMs, maxBytes);
    // Hono keeps its body cache as promises (its types say values): what c.req.text() and
    // c.req.arrayBuffer() return. Decoding as Response.text() does: UTF-8, BOM dropped.
    const cache = c.req.bodyCache as Record<string, Promise<unknown>>;
    cache.arrayBuffer = Promise.resolve(body.buffer);
    cache.text = Promise.resolve(decoder.decode(body));
    if (!raw.headers.has("content-length")) c.req.raw = new Request(raw, { body });
    await next();
  };
}

/** The stream's bytes, or a typed error when it is too slow, too large or cut short. */
const decoder = new TextDecoder();

async function readWithin(
  stream: ReadableStream<Uint8Array>,
  timeoutMs: number,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), timeoutMs);
  });
  try {
    while (true) {
      const read = await Promise.race([reader.read(), expired]).catch((err) => {
        throw new BodyIncomplete(err);
      });
      if (read === "expired") throw new BodyTimeout(timeoutMs);
      if (read.done) break;
      size += read.value.byteLength;
      if (size > maxBytes) throw new PayloadTooLarge(maxBytes);
      chunks.push(read.value);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  } finally {
    clearTimeout(timer);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}
