/**
 * market-data: latest quotes for the frontend, `GET /?symbols=AAPL,MSFT` (user JWT, strict CORS).
 *
 * 1 to `MARKET_DATA_MAX_SYMBOLS` distinct symbols matching `^[A-Z][A-Z.]{0,9}$` (else `400`).
 * Answers `{"quotes": {"AAPL": {bid, ask, bidSize, askSize, timestamp, source, ageSeconds,
 * stale?}}, "asOf", "notFound"?}`; quotes are cached `MARKET_DATA_CACHE_TTL_SECONDS` across
 * instances and coalesced into one provider call (quotes.ts). Per-user rate limit (policy
 * "market-data", `MARKET_DATA_RATE_LIMIT` a minute), counted in the cache read's statement.
 * `Cache-Control: private, no-store` on every answer: prices must not sit in a shared cache.
 */
import { rateLimitPurge } from "../../shared/platform/platform.ts";
import { defineFunction } from "../../shared/platform/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { requireJwt, userId } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { noStore } from "../../shared/http/no_store.ts";
import { deferRateLimit } from "../../shared/http/rate_limit.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { quotesHandler, type QuotesVars } from "./handlers.ts";
import { quoteServiceFor } from "./quotes.ts";

export { parseSymbols } from "./handlers.ts";

const Env = BrowserEnv.extend({
  MARKET_DATA_API_URL: httpUrl,
  MARKET_DATA_API_KEY_ID: secret(1),
  MARKET_DATA_API_SECRET_KEY: secret(1),
});

const marketDataFunction = defineFunction<typeof Env, QuotesVars>({
  name: "market-data",
  env: Env,
  browser: true,
  build(app, { config, limits: l, ...ctx }) {
    const service = quoteServiceFor(config, { ...ctx, limits: l });
    route(app, "/", {
      GET: [
        noStore,
        requireJwt<QuotesVars>({ tokens: ctx.tokens, role: "authenticated" }),
        deferRateLimit({
          db: ctx.db,
          policy: "market-data",
          stats: ctx.rateLimits,
          quota: l.MARKET_DATA_RATE_LIMIT,
          windowSeconds: 60,
          key: userId,
          now: ctx.now,
          purge: rateLimitPurge({ limits: l, ...ctx }),
        }),
        quotesHandler(service, { maxSymbols: l.MARKET_DATA_MAX_SYMBOLS, now: ctx.now }),
      ],
    });
  },
});

export default marketDataFunction;

if (import.meta.main) await serveStandalone(marketDataFunction);
