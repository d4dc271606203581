/**
 * status's one handler: the database's answer decides `200 {"status":"ok"}` or
 * `503 {"status":"fail_safe"}` with `Retry-After` (and why: unavailable, or its schema behind); a
 * service caller also gets every dependency's state (database latency and recovery, breakers,
 * and what other modules contribute: queued alerts, the Discord webhook, rate-limit counters).
 *
 * @example
 * ```ts
 * import type { Hono } from "hono";
 * import type { FunctionContext } from "../../shared/platform/app.ts";
 * import { health } from "./health.ts";
 *
 * declare const app: Hono, ctx: FunctionContext<unknown>;
 * app.get("/", health(ctx));
 * ```
 */
import type { Context } from "hono";
import { serviceCaller } from "../../shared/auth/jwt.ts";
import { DatabaseUnavailable, retryAfterSeconds, SchemaOutdated } from "../../shared/errors.ts";
import type { FunctionContext } from "../../shared/platform/app.ts";
import { statusDetails } from "../../shared/platform/status_details.ts";

/** `GET /status`: health for monitors, the details for service callers. */
export function health(ctx: FunctionContext<unknown>) {
  return async function health(c: Context): Promise<Response> {
    const operator = await serviceCaller(ctx.tokens, {
      authorization: c.req.header("authorization"),
      apikey: c.req.header("apikey"),
    }) !== null;
    let latencyMs: number | null = null;
    let failure: DatabaseUnavailable | SchemaOutdated | undefined;
    try {
      latencyMs = await ctx.db.ping();
    } catch (err) {
      if (!(err instanceof DatabaseUnavailable || err instanceof SchemaOutdated)) throw err;
      failure = err;
    }
    const ok = latencyMs !== null;
    const body: Record<string, unknown> = { status: ok ? "ok" : "fail_safe" };
    if (failure instanceof SchemaOutdated) {
      body.reason = "schema outdated";
      body.error = { code: failure.code, message: failure.message };
    } else if (failure) body.reason = "database unavailable";
    if (operator) body.dependencies = await dependencies(ctx, latencyMs);
    c.header("cache-control", "no-store");
    if (failure) c.header("retry-after", String(retryAfterSeconds(failure.retryAfterMs)));
    return c.json(body, ok ? 200 : 503);
  };
}

async function dependencies(ctx: FunctionContext<unknown>, latencyMs: number | null) {
  return {
    database: { latencyMs, ...ctx.db.health() },
    breakers: ctx.breakers.states(),
    ...(latencyMs === null ? {} : await statusDetails(ctx)),
  };
}
