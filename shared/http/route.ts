/**
 * Routes with a `405` and an `Allow` header for any other method, which Hono would answer `404`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { bodyLimit } from "./body_limit.ts";
 * import { route } from "./route.ts";
 *
 * const app = new Hono();
 * // GET and POST on "/"; any other method answers 405 with `Allow: GET, POST`.
 * route(app, "/", {
 *   GET: [(c) => c.json([])],
 *   POST: [bodyLimit(16384), (c) => c.json({ created: true }, 201)],
 * });
 * ```
 */
import type { Env, Handler, Hono, MiddlewareHandler } from "hono";
import { MethodNotAllowed } from "../errors.ts";

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
type Handlers<E extends Env> = (MiddlewareHandler<E> | Handler<E>)[];

/** Registers each method's handlers on `path`, then answers 405 for every other method. */
export function route<E extends Env>(
  app: Hono<E>,
  path: string,
  byMethod: Partial<Record<Method, Handlers<E>>>,
): void {
  const allowed = Object.keys(byMethod) as Method[];
  for (const method of allowed) {
    // Hono's one `on()` overload that takes a handler array names its paths as an array.
    app.on(method, [path], ...byMethod[method]!);
  }
  app.all(path, () => {
    throw new MethodNotAllowed(allowed);
  });
}
