/**
 * `Cache-Control: private, no-store` on every answer of a route, refusals included: per-user,
 * per-request data (quotes, tool results) must never sit in a shared cache.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { noStore } from "./no_store.ts";
 * new Hono().get("/", noStore, (c) => c.json({ ok: true }));
 * ```
 */
import { createMiddleware } from "hono/factory";

export const noStore = createMiddleware(async function noStore(c, next) {
  await next();
  c.header("cache-control", "private, no-store");
});
