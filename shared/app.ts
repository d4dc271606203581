/**
 * How a function is declared and booted. A function names the environment it needs and builds
 * its routes on a Hono app that already has the suite's standard stack: request id, access log,
 * strict CORS for browser-facing functions, the one error boundary and a JSON `404`. A function
 * whose configuration is invalid boots into a handler that answers `503 BOOT_ERROR`. Past
 * `MAX_IN_FLIGHT_REQUESTS` concurrent requests an instance sheds load with `503 OVERLOADED`.
 *
 * @example
 * export default defineFunction({
 *   name: "status",
 *   env: z.object({ SUPABASE_JWT_SECRET: secret(32) }),
 *   build(app, ctx) { app.get("/", (c) => c.json({ status: "ok" })); },
 * });
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { getPath } from "hono/utils/url";
import type { z } from "zod";
import { cors } from "./cors.ts";
import { loadShed } from "./load_shed.ts";
import type { Database } from "./db.ts";
import { ConfigError, parseEnv } from "./env.ts";
import { BootError, errorParts, HttpError, NotFound } from "./errors.ts";
import type { Claims } from "./jwt.ts";
import type { Limits } from "./limits.ts";
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
  /** Tells operators directly (not through the database), e.g. that the database is down. */
  alertOperators: (kind: string, title: string, message: string) => void;
}

/** Hono variables every handler can read. */
export interface AppEnv {
  Variables: {
    requestId: string;
    claims: Claims;
  };
}

export type App = Hono<AppEnv>;

export interface FunctionContext<E> extends Platform {
  /** This function's validated environment. */
  config: E;
  name: string;
}

export interface FunctionDefinition<S extends z.ZodType = z.ZodType> {
  name: string;
  /** The variables this function needs; validated at boot. */
  env: S;
  /** Browser-facing: strict CORS from `FRONTEND_URL` (which the env schema must then require). */
  browser: boolean;
  /** Methods the CORS preflight allows. */
  methods?: string[];
  build(app: App, ctx: FunctionContext<z.infer<S>>): void | Promise<void>;
}

/** Declares a function (typing helper). */
export function defineFunction<S extends z.ZodType>(
  def: FunctionDefinition<S>,
): FunctionDefinition<S> {
  return def;
}

export type FetchHandler = (req: Request) => Response | Promise<Response>;

/** Boots a function on a platform; never throws: a bad configuration yields a BOOT_ERROR handler. */
export async function bootFunction(
  def: FunctionDefinition,
  platform: Platform,
): Promise<{ fetch: FetchHandler; problems: string[] }> {
  const log = platform.log.child({ fn: def.name });
  const app = baseApp(def.name, log, platform.limits.MAX_IN_FLIGHT_REQUESTS);
  try {
    const config = parseEnv(def.env, platform.env) as { FRONTEND_URL?: string[] };
    if (def.browser) {
      if (!config.FRONTEND_URL) throw new ConfigError(["FRONTEND_URL is missing"]);
      app.use(cors({
        origins: config.FRONTEND_URL,
        methods: [...(def.methods ?? ["GET", "POST"]), "OPTIONS"],
        maxAgeSeconds: platform.limits.CORS_MAX_AGE_SECONDS,
      }));
    }
    await def.build(app, { ...platform, log, config, name: def.name });
    return { fetch: app.fetch, problems: [] };
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : ["it failed to start"];
    log.error("function failed to boot", {
      problems,
      error: err instanceof ConfigError ? undefined : err,
    });
    const failed = baseApp(def.name, log, platform.limits.MAX_IN_FLIGHT_REQUESTS);
    failed.all("*", () => {
      throw new BootError(def.name, problems);
    });
    return { fetch: failed.fetch, problems };
  }
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

/** The standard stack under every function's routes. */
function baseApp(name: string, log: Logger, maxInFlight: number): App {
  const app = new Hono<AppEnv>({ getPath: functionPath }).basePath(`/${name}`);
  app.use(requestId({ headerName: "x-request-id", limitLength: 128 }));
  app.use(async function accessLog(c, next) {
    const started = performance.now();
    await next();
    log.info("request", {
      requestId: c.var.requestId,
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    });
  });
  app.use(loadShed({ maxInFlight }));
  app.notFound(() => {
    throw new NotFound();
  });
  app.onError((err, c) => {
    const requestId = c.var.requestId ?? "unknown";
    // Known errors are in the access log by status; an unknown one is a bug worth its stack.
    if (!(err instanceof HttpError)) {
      log.error("unhandled error", { requestId, error: err, stack: err.stack });
    }
    const { status, headers, body } = errorParts(err, requestId);
    return c.body(body, status as 400, headers);
  });
  return app;
}
