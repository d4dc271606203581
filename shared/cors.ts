/**
 * Strict CORS for browser-facing functions: only the exact origins listed in `FRONTEND_URL`,
 * never `*`. A preflight or request from any other origin gets `403` and has no effect.
 *
 * Hono's own `cors()` lets a disallowed origin through without the header and answers its
 * preflight `204`; the contract wants a `403` for both, so this is written here.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { cors } from "./cors.ts";
 *
 * const app = new Hono();
 * app.use(cors({ origins: ["https://app.example.com"], maxAgeSeconds: 600 }));
 * ```
 */
import type { MiddlewareHandler } from "hono";
import { Forbidden } from "./errors.ts";

export interface CorsOptions {
  /** Exact allowed origins (`scheme://host[:port]`). */
  origins: readonly string[];
  /** Methods a preflight may ask for. Default GET, POST, OPTIONS. */
  methods?: readonly string[];
  /** `Access-Control-Max-Age`. */
  maxAgeSeconds: number;
}

/** Request headers a browser may send (supabase-js sends apikey and x-client-info). */
export const ALLOWED_HEADERS = [
  "authorization",
  "apikey",
  "content-type",
  "x-client-info",
  "idempotency-key",
  "x-request-id",
];

/** Response headers a page may read. */
export const EXPOSED_HEADERS = [
  "x-request-id",
  "retry-after",
  "idempotent-replayed",
  "ratelimit",
  "ratelimit-policy",
];

/** The CORS middleware; throws at start-up if an origin is not an exact origin. */
export function cors(opts: CorsOptions): MiddlewareHandler {
  const allowed = new Set(opts.origins.map((o) => {
    const origin = new URL(o).origin;
    if (origin === "null" || origin !== o.replace(/\/$/, "")) {
      throw new Error(`CORS origin is not an exact origin: ${o}`);
    }
    return origin;
  }));
  if (allowed.size === 0) throw new Error("CORS needs at least one allowed origin");
  const methods = (opts.methods ?? ["GET", "POST", "OPTIONS"]).join(", ");
  const allowHeaders = ALLOWED_HEADERS.join(", ");
  const exposeHeaders = EXPOSED_HEADERS.join(", ");
  const maxAge = String(opts.maxAgeSeconds);
  // Every preflight answer is known at start-up, one per origin: the per-request path only looks
  // it up (building headers one by one was most of a preflight's cost). No
  // Access-Control-Allow-Credentials: callers authenticate with bearer tokens, not cookies.
  const preflights = new Map([...allowed].map((origin) => [origin, {
    vary: "Origin",
    "access-control-allow-origin": origin,
    "access-control-allow-methods": methods,
    "access-control-allow-headers": allowHeaders,
    "access-control-max-age": maxAge,
  }]));

  return async function corsGuard(c, next) {
    const origin = c.req.header("origin");
    if (origin === undefined) {
      // Not a browser's cross-origin call; a bare OPTIONS still gets an answer, with no grants.
      if (c.req.method === "OPTIONS") return c.body(null, 204);
      return next();
    }
    const preflight = c.req.method === "OPTIONS" &&
      c.req.header("access-control-request-method") !== undefined;
    const granted = preflights.get(origin);
    if (granted === undefined) {
      c.header("vary", "Origin", { append: true });
      throw new Forbidden("This origin is not allowed.", "ORIGIN_NOT_ALLOWED");
    }
    // A Response of its own: Hono's c.body() would copy the headers in one at a time.
    if (preflight) return new Response(null, { status: 204, headers: granted });
    c.header("vary", "Origin", { append: true });
    c.header("access-control-allow-origin", origin);
    c.header("access-control-expose-headers", exposeHeaders);
    await next();
  };
}
