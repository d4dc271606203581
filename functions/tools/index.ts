/**
 * tools: a fixed allowlist of computations for the frontend (user JWT, strict CORS).
 *
 * `GET /` lists the tools with the JSON Schema of their parameters; `POST /execute {"tool",
 * "params"}` runs one (registry.ts): `404 TOOL_NOT_FOUND`, `400 VALIDATION_FAILED` with issues,
 * `504 TOOL_TIMEOUT` past its deadline, else `200` with the tool's result. Tools:
 * `options.greeks` (greeks.ts) and `backtest.run` (backtest.ts, bars from the market-data
 * provider, bars.ts). Per-user rate limit (policy "tools", `TOOLS_RATE_LIMIT` a minute) with the
 * RateLimit fields. `Cache-Control: private, no-store`: results are per request.
 */
import type { MiddlewareHandler } from "hono";
import { type AppEnv, defineFunction } from "../../shared/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { requireJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { rateLimit } from "../../shared/rate_limit.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { readJson } from "../../shared/validation.ts";
import { backtestTool } from "./backtest.ts";
import { BarsProvider } from "./bars.ts";
import { greeksTool } from "./greeks.ts";
import { ExecuteRequest, ToolRegistry } from "./registry.ts";

const Env = BrowserEnv.extend({
  MARKET_DATA_API_URL: httpUrl,
  MARKET_DATA_API_KEY_ID: secret(1),
  MARKET_DATA_API_SECRET_KEY: secret(1),
});

const toolsFunction = defineFunction({
  name: "tools",
  env: Env,
  browser: true,
  methods: ["GET", "POST"],
  build(app, ctx) {
    const l = ctx.limits;
    const provider = new BarsProvider({
      url: ctx.config.MARKET_DATA_API_URL,
      keyId: ctx.config.MARKET_DATA_API_KEY_ID,
      secretKey: ctx.config.MARKET_DATA_API_SECRET_KEY,
      timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
      pageSize: l.TOOLS_BACKTEST_PAGE_SIZE,
      // The same upstream as functions/market-data, so the same breaker (and options).
      breaker: ctx.breakers.get("market-data", {
        isHealthy: (err) => (err as Error)?.name === "ProviderRateLimited",
      }),
      fetch: ctx.fetch,
      now: ctx.now,
    });
    const registry = new ToolRegistry([
      greeksTool({
        minExpirySeconds: l.TOOLS_GREEKS_MIN_EXPIRY_SECONDS,
        deadlineMs: l.TOOLS_DEADLINE_MS,
      }),
      backtestTool({
        provider,
        maxBars: l.TOOLS_BACKTEST_MAX_BARS,
        maxWindow: l.TOOLS_BACKTEST_MAX_WINDOW,
        deadlineMs: l.TOOLS_BACKTEST_DEADLINE_MS,
      }),
    ], { maxOutputBytes: l.TOOLS_MAX_OUTPUT_BYTES, now: ctx.now });
    const listing = JSON.stringify({ tools: registry.list() });

    // requireJwt is typed for `{claims}` only; it sets exactly that on AppEnv's context.
    const user = requireJwt({
      tokens: ctx.tokens,
      role: "authenticated",
    }) as unknown as MiddlewareHandler<AppEnv>;
    const noStore: MiddlewareHandler<AppEnv> = async function noStore(c, next) {
      await next();
      c.header("cache-control", "private, no-store");
    };
    const perUser = rateLimit({
      db: ctx.db,
      policy: "tools",
      quota: l.TOOLS_RATE_LIMIT,
      windowSeconds: 60,
      key: (c) => (c.get("claims") as AppEnv["Variables"]["claims"]).sub,
      now: ctx.now,
    });

    route<AppEnv>(app, "/", {
      GET: [noStore, user, perUser, (c) => c.body(listing, 200, JSON_TYPE)],
    });
    route<AppEnv>(app, "/execute", {
      POST: [
        noStore,
        user,
        perUser,
        contentType("application/json"),
        bodyLimit(l.BODY_LIMIT_BYTES),
        async (c) => {
          const { tool, params } = await readJson(c, ExecuteRequest);
          const result = await registry.execute(tool, params, c.req.raw.signal);
          return c.body(result, 200, JSON_TYPE);
        },
      ],
    });
  },
});

const JSON_TYPE = { "content-type": "application/json; charset=utf-8" };

export default toolsFunction;

if (import.meta.main) await serveStandalone(toolsFunction);
