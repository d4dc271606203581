/**
 * Request body size limit: `413` before a byte past the limit is buffered. Under the standard
 * stack this is where the body is read (shared/body_deadline.ts: within its deadline and the
 * instance's budget, after the caller's checks); elsewhere Hono's `bodyLimit` does the counting
 * (Content-Length and streamed bodies alike), mapped to our typed error.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { bodyLimit } from "./body_limit.ts";
 *
 * const app = new Hono();
 * app.post("/", bodyLimit(16 * 1024), async (c) => c.json(await c.req.json()));
 * ```
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit as honoBodyLimit } from "hono/body-limit";
import { PayloadTooLarge } from "../errors.ts";
import { bodyIsDeferred, readBody } from "./body_deadline.ts";

export function bodyLimit(maxBytes: number): MiddlewareHandler {
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) {
    throw new Error(`Body limit must be a positive integer, got ${maxBytes}`);
  }
  const counted = honoBodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new PayloadTooLarge(maxBytes);
    },
  });
  return async function limitBody(c, next) {
    if (!bodyIsDeferred(c)) return await counted(c, next);
    await readBody(c, maxBytes);
    await next();
  };
}
