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
import { Forbidden } from "../errors.ts";
import { requestIdOf } from "./request_id.ts";

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
  return corsPolicy(opts).guard;
}

/** The policy of `cors()`, with its preflight answers readable ahead of any routing. */
export interface CorsPolicy {
  /** The middleware (what `cors()` returns). */
  guard: MiddlewareHandler;
  /**
   * The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
   * origin: a new `204` with its grants, its headers open to additions. `undefined` for any
   * other request, which `guard` handles (a refused preflight included).
   */
  preflight(req: Request): Response | undefined;
}

/** `cors()`'s middleware and its preflight answers; throws if an origin is not exact. */
export function corsPolicy(opts: CorsOptions): CorsPolicy {
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
  // Every preflight answer is known at start-up, one per origin, and each request gets a clone:
  // a clone copies the header list as it is, where building a Response from the headers checks
  // every name and value again, character by character (10.8 → 10.1 µs a preflight). No
  // Access-Control-Allow-Credentials: callers authenticate with bearer tokens, not cookies.
  const preflights = new Map([...allowed].map((origin) => [
    origin,
    new Response(null, {
      status: 204,
      headers: {
        vary: "Origin",
        "access-control-allow-origin": origin,
        "access-control-allow-methods": methods,
        "access-control-allow-headers": allowHeaders,
        "access-control-max-age": maxAge,
      },
    }),
  ]));
  const preflight = (req: Request) => {
    if (req.method !== "OPTIONS") return undefined;
    const origin = req.headers.get("origin");
    if (origin === null || req.headers.get("access-control-request-method") === null) {
      return undefined;
    }
    return preflights.get(origin)?.clone();
  };

  const guard: MiddlewareHandler = async function corsGuard(c, next) {
    // A Response of its own: Hono's c.body() would copy the headers in one at a time.
    const answer = preflight(c.req.raw);
    if (answer) return answer;
    const origin = c.req.header("origin");
    if (origin === undefined) {
      // Not a browser's cross-origin call; a bare OPTIONS still gets an answer, with no grants.
      if (c.req.method === "OPTIONS") return c.body(null, 204);
      return next();
    }
    if (!preflights.has(origin)) {
      c.header("vary", "Origin", { append: true });
      throw new Forbidden("This origin is not allowed.", "ORIGIN_NOT_ALLOWED");
    }
    c.header("vary", "Origin", { append: true });
    c.header("access-control-allow-origin", origin);
    c.header("access-control-expose-headers", exposeHeaders);
    await next();
  };
  return { guard, preflight };
}

/** A server's handler, with the connection info `Deno.serve` hands over. */
export type FetchHandler = (
  req: Request,
  info?: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/**
 * Answers a preflight from an allowed origin ahead of the app, as `policy.guard` would inside it:
 * `204` with the grants and the request id. Such an answer needs no route, guard or access line;
 * taken through the stack it cost 13.9 µs of server CPU, ahead of it 11.4 (wrk, 32 connections).
 * Everything else, a refused preflight included, goes to `fetch`.
 */
export function preflightsFirst(policy: CorsPolicy, fetch: FetchHandler): FetchHandler {
  return (req, info) => {
    const answer = policy.preflight(req);
    if (answer === undefined) return fetch(req, info);
    answer.headers.append("x-request-id", requestIdOf(req.headers.get("x-request-id")));
    return answer;
  };
}
