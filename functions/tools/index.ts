/**
 * tools: a fixed allowlist of computations for the frontend (user JWT, strict CORS). `GET /`
 * lists the tools, `POST /execute {"tool", "params"}` runs one (handlers.ts); the tools are in
 * catalog.ts. Per-user rate limit (policy "tools", `TOOLS_RATE_LIMIT` a minute) with the
 * RateLimit fields; backtests have their own besides (policy "backtests",
 * `TOOLS_BACKTEST_RATE_LIMIT` a minute) and at most `TOOLS_BACKTEST_CONCURRENCY` run at once per
 * user (backtest_slots.ts). `Cache-Control: private, no-store`: results are per request.
 */
import type { Context } from "hono";
import { rateLimitPurge } from "../../shared/platform/platform.ts";
import { defineFunction } from "../../shared/platform/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/http/body_limit.ts";
import { contentType } from "../../shared/http/content_type.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { requireJwt, userId } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { rateLimit } from "../../shared/http/rate_limit.ts";
import { noStore } from "../../shared/http/no_store.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { toolCatalog } from "./catalog.ts";
import { executeTool, listTools, type ToolsVars, validExecute } from "./handlers.ts";
import { backtestSlots } from "./backtest_slots.ts";

/** Whether the validated execute body runs a backtest. */
const isBacktest = (c: Context<ToolsVars>) => c.var.execute.tool === "backtest.run";

const Env = BrowserEnv.extend({
  MARKET_DATA_API_URL: httpUrl,
  MARKET_DATA_API_KEY_ID: secret(1),
  MARKET_DATA_API_SECRET_KEY: secret(1),
});

const toolsFunction = defineFunction<typeof Env, ToolsVars>({
  name: "tools",
  env: Env,
  browser: true,
  build(app, { db, limits: l, ...ctx }) {
    const registry = toolCatalog({ db, limits: l, ...ctx });
    const user = requireJwt<ToolsVars>({ tokens: ctx.tokens, role: "authenticated" });
    const quota = { quota: l.TOOLS_RATE_LIMIT, windowSeconds: 60 };
    const perUser = rateLimit({
      db,
      policy: "tools",
      ...quota,
      key: userId,
      now: ctx.now,
      stats: ctx.rateLimits,
      purge: rateLimitPurge({ limits: l, ...ctx }),
    });

    // noStore wraps the chain, so its header is on every answer, refusals included.
    route(app, "/", { GET: [noStore, user, perUser, listTools(registry)] });
    route(app, "/execute", {
      POST: [
        noStore,
        user,
        perUser,
        contentType("application/json"),
        bodyLimit(l.BODY_LIMIT_BYTES),
        validExecute,
        // Backtests, named by the body: their own rate, then a slot of the user's few.
        rateLimit({
          db,
          policy: "backtests",
          quota: l.TOOLS_BACKTEST_RATE_LIMIT,
          windowSeconds: 60,
          key: (c) => isBacktest(c) ? userId(c) : undefined,
          now: ctx.now,
          stats: ctx.rateLimits,
        }),
        backtestSlots({
          db,
          max: l.TOOLS_BACKTEST_CONCURRENCY,
          leaseMs: l.TOOLS_BACKTEST_DEADLINE_MS + 5_000,
          applies: isBacktest,
          owner: userId,
        }),
        executeTool(registry),
      ],
    });
  },
});

export default toolsFunction;

if (import.meta.main) await serveStandalone(toolsFunction);
