/**
 * Routes with a `405` and an `Allow` header for any other method, which Hono would answer `404`.
 *
 * @example
 * route(app, "/", { GET: [list], POST: [bodyLimit(16384), create] });
 */
import type { Env, Handler, Hono, MiddlewareHandler } from "hono";
import { MethodNotAllowed } from "./errors.ts";

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
    // deno-lint-ignore no-explicit-any
    (app.on as any)(method, path, ...byMethod[method]!);
  }
  app.all(path, () => {
    throw new MethodNotAllowed(allowed);
  });
}
