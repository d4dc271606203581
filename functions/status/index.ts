/**
 * status: health and fail-safe state for operators and monitors.
 * `200 {"status":"ok"}` when the database answers, `503 {"status":"fail_safe"}` with
 * `Retry-After` when it does not; a service-role JWT adds every dependency's state.
 */
import * as z from "../../shared/zod.ts";
import { defineFunction, type FunctionContext } from "../../shared/platform/app.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { DatabaseUnavailable, retryAfterSeconds, SchemaOutdated } from "../../shared/errors.ts";
import { serviceCaller } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { statusDetails } from "../../shared/platform/status_details.ts";

const Env = BaseEnv;

const statusFunction = defineFunction({
  name: "status",
  env: Env,
  browser: false,
  build(app, ctx) {
    const tokens = ctx.tokens;
    route(app, "/", {
      GET: [async (c) => {
        const operator = await serviceCaller(tokens, {
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
      }],
    });
  },
});

export default statusFunction;

async function dependencies(ctx: FunctionContext<z.infer<typeof Env>>, latencyMs: number | null) {
  return {
    database: { latencyMs, ...ctx.db.health() },
    breakers: ctx.breakers.states(),
    ...(latencyMs === null ? {} : await statusDetails(ctx)),
  };
}

if (import.meta.main) await serveStandalone(statusFunction);
