/**
 * Content type guard: a request with a body must declare the media type the route reads,
 * else `415`. Parameters such as `charset=utf-8` are allowed.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { contentType } from "./content_type.ts";
 *
 * const app = new Hono();
 * app.post("/", contentType("application/json"), async (c) => c.json(await c.req.json()));
 * ```
 */
import type { MiddlewareHandler } from "hono";
import { UnsupportedMediaType } from "../errors.ts";

export function contentType(mediaType: string): MiddlewareHandler {
  const expected = mediaType.toLowerCase();
  return async function contentTypeGuard(c, next) {
    const declared = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (declared !== expected) throw new UnsupportedMediaType(expected);
    await next();
  };
}
