/**
 * Request body size limit: `413` before a byte past the limit is buffered. Hono's `bodyLimit`
 * does the counting (Content-Length and streamed bodies alike); this maps it to our typed error.
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

export function bodyLimit(maxBytes: number): MiddlewareHandler {
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) {
    throw new Error(`Body limit must be a positive integer, got ${maxBytes}`);
  }
  return honoBodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new PayloadTooLarge(maxBytes);
    },
  });
}
