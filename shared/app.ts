/**
 * How a function is declared and booted. A function names the environment it needs and builds
 * its routes on a Hono app that already has the suite's standard stack: request id, access log,
 * strict CORS for browser-facing functions, the body read under its deadline, load shedding, the
 * one error boundary and a JSON `404`. A function whose configuration is invalid boots into a
 * handler that answers `503 BOOT_ERROR`. Past `MAX_IN_FLIGHT_REQUESTS` concurrent requests an
 * instance sheds load with `503 OVERLOADED`.
 *
 * **The one guard order**, after that stack, for every route of every function:
 * 1. the caller: `requireJwt` (user or service role), or a webhook's signature;
 * 2. rate limits keyed by the caller or the client IP (they cost one statement, never a body);
 * 3. `contentType`, then `bodyLimit`;
 * 4. validation of the body or query into a typed variable (`c.var.<name>`);
 * 5. rate limits keyed by what the body names (login's per-email limit);
 * 6. idempotency;
 * 7. the handler.
 * Cheap refusals come first, so a request refused by an earlier guard costs nothing later. One
 * exception: a per-IP limit that must also count unauthenticated calls (auth's logout, which
 * costs a call to Supabase Auth whatever the token) comes before the caller.
 *
 * @example
 * ```ts
 * import { defineFunction } from "./app.ts";
 * import { BaseEnv } from "./base_env.ts";
 *
 * export default defineFunction({
 *   name: "status",
 *   env: BaseEnv,
 *   browser: false,
 *   build(app, ctx) {
 *     app.get("/", async (c) => c.json({ status: "ok", latencyMs: await ctx.db.ping() }));
 *   },
 * });
 * ```
 */
import { Hono } from "hono";
import { getPath } from "hono/utils/url";
import type * as z from "./zod.ts";
import { BodyBudget, bodyDeadline } from "./body_deadline.ts";
import { type CorsPolicy, corsPolicy } from "./cors.ts";
import { loadShed } from "./load_shed.ts";
import type { Database } from "./db.ts";
import { ConfigError, parseEnv } from "./env.ts";
import { BootError, errorParts, HttpError, NotFound } from "./errors.ts";
import { type Claims, TokenVerifier, type TokenVerifierOptions } from "./jwt.ts";
import type { MiddlewareHandler } from "hono";
import type { Limits } from "./limits.ts";
import type { RateLimitStats } from "./rate_limit.ts";
import type { Logger } from "./logger.ts";
import type { Breakers } from "./circuit_breaker.ts";

/** What every function may use: one per process, shared by the functions it serves. */
export interface Platform {
  /** The raw environment (process env merged with env files). */
  env: Record<string, string | undefined>;
  limits: Limits;
  db: Database;
  log: Logger;
  breakers: Breakers;
  fetch: typeof fetch;
  now: () => number;
  /** Keeps background work (alert delivery) alive past the response, as EdgeRuntime.waitUntil. */
  background: (work: Promise<unknown>) => void;
  /** This instance's rate-limit counters by policy (for `status`); pass as `stats` to rateLimit. */
  rateLimits: RateLimitStats;
  /** Tells operators directly (not through the database), e.g. that the database is down. */
  alertOperators: (kind: string, title: string, message: string) => void;
}

/**
 * Hono variables every handler can read: the request id, and once `requireJwt` ran, the caller's
 * claims and (for users) `userId`. A function adds its own guards' variables to these
 * (`{ Variables: AppEnv["Variables"] & { order: OrderRequest } }`) and declares that type in
 * `defineFunction`, so handlers read `c.var.order` without casts.
 */
export interface AppEnv {
  Variables: {
    requestId: string;
    claims: Claims;
    userId: string;
  };
}

/** A function's app, typed with its variables. */
export type App<E extends AppEnv = AppEnv> = Hono<E>;

export interface FunctionContext<E> extends Platform {
  /** This function's validated environment. */
  config: E;
  name: string;
  /** The project's token and service-key verifier, built from this function's configuration. */
  tokens: TokenVerifier;
}

export interface FunctionDefinition<S extends z.ZodType = z.ZodType, E extends AppEnv = AppEnv> {
  name: string;
  /** The variables this function needs; validated at boot. */
  env: S;
  /** Browser-facing: strict CORS from `FRONTEND_URL` (which the env schema must then require). */
  browser: boolean;
  /** Methods the CORS preflight allows. */
  methods?: string[];
  build(app: App<E>, ctx: FunctionContext<z.infer<S>>): void | Promise<void>;
}

/** Declares a function (typing helper; `E` names the variables its guards set). */
export function defineFunction<S extends z.ZodType, E extends AppEnv = AppEnv>(
  def: FunctionDefinition<S, E>,
): FunctionDefinition<S, E> {
  return def;
}

/** A booted function: Hono's fetch, with the connection info `Deno.serve` hands over. */
export type FetchHandler = (
  req: Request,
  info?: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/** Boots a function on a platform; never throws: a bad configuration yields a BOOT_ERROR handler. */
export async function bootFunction<S extends z.ZodType, E extends AppEnv>(
  def: FunctionDefinition<S, E>,
  platform: Platform,
): Promise<{ fetch: FetchHandler; problems: string[] }> {
  const log = platform.log.child({ fn: def.name });
  try {
    const config = parseEnv(def.env, platform.env);
    const base = config as KeyConfig & { FRONTEND_URL?: string[] };
    let policy: CorsPolicy | undefined;
    if (def.browser) {
      if (!base.FRONTEND_URL) throw new ConfigError(["FRONTEND_URL is missing"]);
      policy = corsPolicy({
        origins: base.FRONTEND_URL,
        methods: [...(def.methods ?? ["GET", "POST"]), "OPTIONS"],
        maxAgeSeconds: platform.limits.CORS_MAX_AGE_SECONDS,
      });
    }
    const app = baseApp(def.name, log, platform.limits, policy?.guard);
    const tokens = tokenVerifier(base, platform);
    // Variables are types only: the one app serves every function's variable set.
    await def.build(app as unknown as App<E>, { ...platform, log, config, name: def.name, tokens });
    return { fetch: policy ? preflightsFirst(policy, app.fetch) : app.fetch, problems: [] };
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : ["it failed to start"];
    log.error("function failed to boot", {
      problems,
      error: err instanceof ConfigError ? undefined : err,
    });
    const failed = baseApp(def.name, log, platform.limits);
    failed.all("*", () => {
      throw new BootError(def.name, problems);
    });
    return { fetch: failed.fetch, problems };
  }
}

/** The key sources of the base environment (shared/base_env.ts). */
interface KeyConfig {
  SUPABASE_URL?: string;
  SUPABASE_JWKS?: { keys: JsonWebKey[] };
  SUPABASE_SERVICE_ROLE_KEY?: string;
  SUPABASE_SECRET_KEYS?: string[];
  JWT_SECRET?: string;
  SUPABASE_JWT_SECRET?: string;
}

/** The verifier for a function's configuration; a ConfigError when it names no key source. */
function tokenVerifier(config: KeyConfig, platform: Platform): TokenVerifier {
  const hmacSecret = config.JWT_SECRET ?? config.SUPABASE_JWT_SECRET;
  if (!config.SUPABASE_JWKS && !config.SUPABASE_URL && !hmacSecret) {
    throw new ConfigError([
      "SUPABASE_JWKS or SUPABASE_URL is missing (the project's signing keys)",
    ]);
  }
  return new TokenVerifier({
    jwks: config.SUPABASE_JWKS as TokenVerifierOptions["jwks"],
    supabaseUrl: config.SUPABASE_URL,
    hmacSecret,
    serviceKeys: [config.SUPABASE_SERVICE_ROLE_KEY ?? "", ...(config.SUPABASE_SECRET_KEYS ?? [])],
    cooldownMs: platform.limits.JWKS_COOLDOWN_MS,
    cacheMax: platform.limits.JWT_CACHE_MAX,
    cacheMaxAgeMs: platform.limits.JWT_CACHE_MAX_AGE_MS,
    timeoutMs: platform.limits.JWKS_TIMEOUT_MS,
    fetch: platform.fetch,
  });
}

/**
 * The path a function routes on: Supabase's runtime hands it `/<name>/…`; the local server
 * passes requests as they came (`/functions/v1/<name>/…`), and the prefix is dropped here rather
 * than by re-creating every request.
 */
function functionPath(req: Request): string {
  const path = getPath(req);
  return path.startsWith(LOCAL_PREFIX) ? path.slice(LOCAL_PREFIX.length - 1) : path;
}
const LOCAL_PREFIX = "/functions/v1/";

/** A caller's `x-request-id` that is kept: a plain token (as Hono's `requestId()` accepts). */
const REQUEST_ID = /^[\w\-=]{1,128}$/;

/** The request id: the caller's `x-request-id` when it is a plain token, else a new UUID. */
export function requestIdOf(given: string | null | undefined): string {
  return given != null && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

/**
 * Answers a preflight from an allowed origin ahead of Hono, as `corsGuard` would inside it: `204`
 * with the grants and the request id. Such an answer needs no route, guard or access line (see
 * `accessLog`); taken through the stack it cost 13.9 µs of server CPU, ahead of it 11.4 (wrk,
 * 32 connections). Everything else, a refused preflight included, goes through the stack.
 */
function preflightsFirst(policy: CorsPolicy, fetch: FetchHandler): FetchHandler {
  return (req, info) => {
    const answer = policy.preflight(req);
    if (answer === undefined) return fetch(req, info);
    answer.headers.append("x-request-id", requestIdOf(req.headers.get("x-request-id")));
    return answer;
  };
}

/**
 * The request id: the caller's `x-request-id` when it is a plain token of at most 128
 * characters, else a new UUID; on `c.var.requestId` and on the answer. Hono's `requestId()` does
 * the same but sets the header before the handler runs, and Hono then builds every answer's
 * headers as a copy of that prepared set, one header at a time; setting the one header on the
 * finished answer costs a single write (a tenth of a preflight's time).
 */
const requestId: MiddlewareHandler<AppEnv> = async (c, next) => {
  const id = requestIdOf(c.req.header("x-request-id"));
  c.set("requestId", id);
  await next();
  c.res.headers.set("x-request-id", id);
};

/** The instance's one budget for buffered bodies, shared by every function of a platform. */
function bodyBudget(limits: Limits): BodyBudget {
  let budget = budgets.get(limits);
  if (!budget) budgets.set(limits, budget = new BodyBudget(limits.BODY_BUFFER_BUDGET_BYTES));
  return budget;
}
const budgets = new WeakMap<Limits, BodyBudget>();

/**
 * The standard stack under every function's routes, in the one order every function uses:
 * request id, access log, CORS (so a browser can read even a `503 OVERLOADED`), the body read
 * under its deadline (so a slow sender never counts as work), load shedding, then the function's
 * own guards and handlers; one error boundary and a JSON `404`.
 */
function baseApp(
  name: string,
  log: Logger,
  limits: Limits,
  guardCors?: MiddlewareHandler,
): App {
  const app = new Hono<AppEnv>({ getPath: functionPath }).basePath(`/${name}`);
  app.use(requestId);
  app.use(async function accessLog(c, next) {
    const started = performance.now();
    await next();
    // An answered CORS preflight is not written: it has no effect and names no caller, browsers
    // send one per endpoint per CORS_MAX_AGE_SECONDS, and the platform's invocation log records
    // it anyway. Its line was a third of a preflight's cost. A refused preflight (403) is written.
    if (c.req.method === "OPTIONS" && c.res.status === 204) return;
    log.info("request", {
      requestId: c.get("requestId"),
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    });
  });
  if (guardCors) app.use(guardCors);
  app.use(bodyDeadline({
    timeoutMs: limits.BODY_READ_TIMEOUT_MS,
    maxBytes: limits.BODY_READ_MAX_BYTES,
    budget: bodyBudget(limits),
  }));
  app.use(loadShed({ maxInFlight: limits.MAX_IN_FLIGHT_REQUESTS }));
  app.notFound(() => {
    throw new NotFound();
  });
  app.onError((err, c) => {
    const requestId = c.get("requestId") ?? "unknown";
    // Known errors are in the access log by status; an unknown one is a bug worth its stack.
    if (!(err instanceof HttpError)) {
      log.error("unhandled error", { requestId, error: err, stack: err.stack });
    }
    const { status, headers, body } = errorParts(err, requestId);
    return c.body(body, status as 400, headers);
  });
  return app;
}
