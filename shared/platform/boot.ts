/**
 * Boots a declared function (platform/app.ts) on a platform: validates its environment, builds
 * its routes on the standard stack, and never throws: a function whose configuration is invalid
 * boots into a handler that answers `503 BOOT_ERROR` naming every problem.
 *
 * The standard stack under every function's routes, in the one order every function uses:
 * request id, access log, CORS (so a browser can read even a `503 OVERLOADED`), the body's
 * deadline and the instance's body budget (the body itself is read only when a route's
 * `bodyLimit` asks for it, after its caller is checked; a slow sender never counts as work),
 * load shedding (past
 * `MAX_IN_FLIGHT_REQUESTS` an instance answers `503 OVERLOADED`), then the function's own guards
 * and handlers; one error boundary and a JSON `404`. Preflights from allowed origins are answered
 * ahead of all of it (http/cors.ts `preflightsFirst`).
 *
 * @example
 * ```ts
 * import { bootFunction } from "./boot.ts";
 * import { createPlatform } from "./platform.ts";
 * import statusFunction from "../../functions/status/index.ts";
 *
 * const platform = await createPlatform(Deno.env.toObject());
 * const fn = await bootFunction(statusFunction, platform);
 * const res = await fn.fetch(new Request("http://localhost/status"));
 * await platform.close();
 * ```
 */
import { Hono, type MiddlewareHandler } from "hono";
import { getPath } from "hono/utils/url";
import type * as z from "../zod.ts";
import { accessLog } from "../http/access_log.ts";
import { bodyDeadline } from "../http/body_deadline.ts";
import { type CorsPolicy, corsPolicy, type FetchHandler, preflightsFirst } from "../http/cors.ts";
import { loadShed } from "../http/load_shed.ts";
import { requestId } from "../http/request_id.ts";
import { type ProjectKeys, projectTokenVerifier } from "../auth/project_keys.ts";
import { ConfigError, parseEnv } from "../env.ts";
import { BootError, errorParts, HttpError, NotFound } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { App, AppEnv, FunctionDefinition } from "./app.ts";
import type { Platform } from "./platform.ts";

export type { FetchHandler } from "../http/cors.ts";

/** Boots a function on a platform; never throws: a bad configuration yields a BOOT_ERROR handler. */
export async function bootFunction<S extends z.ZodType, E extends AppEnv>(
  def: FunctionDefinition<S, E>,
  platform: Platform,
): Promise<{ fetch: FetchHandler; problems: string[] }> {
  const log = platform.log.child({ fn: def.name });
  const l = platform.limits;
  try {
    const config = parseEnv(def.env, platform.env);
    const base = config as ProjectKeys & { FRONTEND_URL?: string[] };
    if (def.browser && !base.FRONTEND_URL) throw new ConfigError(["FRONTEND_URL is missing"]);
    // The CORS guard stands in the stack before the routes exist; the policy it applies is made
    // once they do, from the methods they answer (one list, not a second one to keep in step).
    const cors: { policy?: CorsPolicy } = {};
    const guardCors: MiddlewareHandler = (c, next) => cors.policy!.guard(c, next);
    const app = baseApp(def.name, log, platform, def.browser ? guardCors : undefined);
    const tokens = projectTokenVerifier(base, {
      cooldownMs: l.JWKS_COOLDOWN_MS,
      cacheMax: l.JWT_CACHE_MAX,
      cacheMaxAgeMs: l.JWT_CACHE_MAX_AGE_MS,
      timeoutMs: l.JWKS_TIMEOUT_MS,
      fetch: platform.fetch,
    });
    // Variables are types only: the one app serves every function's variable set.
    await def.build(app as unknown as App<E>, { ...platform, log, config, name: def.name, tokens });
    if (!def.browser) return { fetch: app.fetch, problems: [] };
    cors.policy = corsPolicy({
      origins: base.FRONTEND_URL!,
      methods: routedMethods(app),
      maxAgeSeconds: l.CORS_MAX_AGE_SECONDS,
    });
    return { fetch: preflightsFirst(cors.policy, app.fetch), problems: [] };
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : ["it failed to start"];
    log.error("function failed to boot", {
      problems,
      error: err instanceof ConfigError ? undefined : err,
    });
    const failed = baseApp(def.name, log, platform);
    failed.all("*", () => {
      throw new BootError(def.name, problems);
    });
    return { fetch: failed.fetch, problems };
  }
}

/** The methods an app's routes answer (not its catch-alls), and `OPTIONS`. */
function routedMethods(app: Hono<AppEnv>): string[] {
  const methods = new Set(app.routes.map((r) => r.method).filter((m) => m !== "ALL"));
  return [...methods, "OPTIONS"];
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

/** The standard stack (see the module's summary), then the function's routes. */
function baseApp(
  name: string,
  log: Logger,
  { limits, bodyBudget }: Pick<Platform, "limits" | "bodyBudget">,
  guardCors?: MiddlewareHandler,
): App {
  const app = new Hono<AppEnv>({ getPath: functionPath }).basePath(`/${name}`);
  app.use(requestId, accessLog(log));
  if (guardCors) app.use(guardCors);
  app.use(bodyDeadline({
    timeoutMs: limits.BODY_READ_TIMEOUT_MS,
    maxBytes: limits.BODY_READ_MAX_BYTES,
    budget: bodyBudget,
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
