/**
 * Strict CORS for browser-facing functions: only the exact origins listed in `FRONTEND_URL`,
 * never `*`. A preflight or request from any other origin gets `403` and has no effect.
 *
 * Hono's own `cors()` lets a disallowed origin through without the header and answers its
 * preflight `204`; the contract wants a `403` for both, so this is written here.
 *
 * @example
 * app.use(cors({ origins: ["https://app.example.com"], maxAgeSeconds: 600 }));
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

  return async function corsGuard(c, next) {
    const origin = c.req.header("origin");
    const preflight = c.req.method === "OPTIONS" &&
      c.req.header("access-control-request-method") !== undefined;
    if (origin === undefined) {
      // Not a browser's cross-origin call; a bare OPTIONS still gets an answer, with no grants.
      if (c.req.method === "OPTIONS") return c.body(null, 204);
      return next();
    }
    c.header("vary", "Origin", { append: true });
    if (!allowed.has(origin)) {
      throw new Forbidden("This origin is not allowed.", "ORIGIN_NOT_ALLOWED");
    }
    c.header("access-control-allow-origin", origin);
    c.header("access-control-allow-credentials", "true");
    if (preflight) {
      c.header("access-control-allow-methods", methods);
      c.header("access-control-allow-headers", allowHeaders);
      c.header("access-control-max-age", maxAge);
      return c.body(null, 204);
    }
    c.header("access-control-expose-headers", exposeHeaders);
    await next();
  };
}
