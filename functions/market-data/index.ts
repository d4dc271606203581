/**
 * market-data: latest quotes for the frontend, `GET /?symbols=AAPL,MSFT` (user JWT, strict CORS).
 *
 * 1 to `MARKET_DATA_MAX_SYMBOLS` distinct symbols matching `^[A-Z][A-Z.]{0,9}$` (else `400`).
 * Answers `{"quotes": {"AAPL": {bid, ask, bidSize, askSize, timestamp, source, ageSeconds,
 * stale?}}, "asOf", "notFound"?}`; quotes are cached `MARKET_DATA_CACHE_TTL_SECONDS` across
 * instances and coalesced into one provider call (quotes.ts). Per-user rate limit (policy
 * "market-data", `MARKET_DATA_RATE_LIMIT` a minute). `Cache-Control: private, no-store` on every
 * answer: prices are per request and must not sit in a shared cache.
 */
import type { MiddlewareHandler } from "hono";
import { type AppEnv, defineFunction } from "../../shared/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { BadRequest } from "../../shared/errors.ts";
import { requireJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { rateLimit } from "../../shared/rate_limit.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { QuoteProvider } from "./provider.ts";
import { MemoryQuoteCache, QuoteStore } from "./quote_cache.ts";
import { QuoteService } from "./quotes.ts";

const Env = BrowserEnv.extend({
  MARKET_DATA_API_URL: httpUrl,
  MARKET_DATA_API_KEY_ID: secret(1),
  MARKET_DATA_API_SECRET_KEY: secret(1),
});

const SYMBOL = /^[A-Z][A-Z.]{0,9}$/;

/** The distinct symbols of the query, or a `400` naming what is wrong. */
export function parseSymbols(raw: string | undefined, max: number): string[] {
  if (raw === undefined || raw === "") {
    throw new BadRequest("Give 1 to " + max + " symbols: ?symbols=AAPL,MSFT.", "INVALID_SYMBOLS");
  }
  // Bounded before splitting: at most `max` symbols of 10 characters and their commas.
  if (raw.length > max * 11) {
    throw new BadRequest(`At most ${max} symbols per request.`, "TOO_MANY_SYMBOLS");
  }
  const symbols = [...new Set(raw.split(","))];
  const bad = symbols.filter((s) => !SYMBOL.test(s));
  if (bad.length > 0) {
    throw new BadRequest(
      `Symbols must match ^[A-Z][A-Z.]{0,9}$: ${
        bad.slice(0, 5).map((s) => JSON.stringify(s.slice(0, 20))).join(", ")
      }.`,
      "INVALID_SYMBOLS",
    );
  }
  if (symbols.length > max) {
    throw new BadRequest(`At most ${max} symbols per request.`, "TOO_MANY_SYMBOLS");
  }
  return symbols;
}

const marketDataFunction = defineFunction({
  name: "market-data",
  env: Env,
  browser: true,
  methods: ["GET"],
  build(app, ctx) {
    const l = ctx.limits;
    const service = new QuoteService({
      store: new QuoteStore(ctx.db),
      memory: new MemoryQuoteCache(l.MARKET_DATA_MEMORY_CACHE_ENTRIES),
      provider: new QuoteProvider({
        url: ctx.config.MARKET_DATA_API_URL,
        keyId: ctx.config.MARKET_DATA_API_KEY_ID,
        secretKey: ctx.config.MARKET_DATA_API_SECRET_KEY,
        timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
        fetch: ctx.fetch,
        now: ctx.now,
      }),
      breaker: ctx.breakers.get("market-data", {
        // The provider's rate limit is handled by the pause, not a sign of an outage.
        isHealthy: (err) => (err as Error)?.name === "ProviderRateLimited",
      }),
      ttlMs: l.MARKET_DATA_CACHE_TTL_SECONDS * 1000,
      maxStaleMs: l.MARKET_DATA_MAX_STALE_SECONDS * 1000,
      timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
      now: ctx.now,
      log: ctx.log,
    });
    // requireJwt is typed for `{claims}` only; it sets exactly that on AppEnv's context.
    const user = requireJwt({
      tokens: ctx.tokens,
      role: "authenticated",
    }) as unknown as MiddlewareHandler<AppEnv>;
    const noStore: MiddlewareHandler<AppEnv> = async function noStore(c, next) {
      await next();
      c.header("cache-control", "private, no-store");
    };

    route<AppEnv>(app, "/", {
      GET: [
        noStore,
        user,
        rateLimit({
          db: ctx.db,
          policy: "market-data",
          quota: l.MARKET_DATA_RATE_LIMIT,
          windowSeconds: 60,
          key: (c) => (c.get("claims") as AppEnv["Variables"]["claims"]).sub,
          now: ctx.now,
        }),
        async (c) => {
          const symbols = parseSymbols(c.req.query("symbols"), l.MARKET_DATA_MAX_SYMBOLS);
          const { quotes, notFound } = await service.get(symbols);
          return c.json({
            quotes,
            asOf: new Date(ctx.now()).toISOString(),
            ...(notFound.length > 0 ? { notFound } : {}),
          });
        },
      ],
    });
  },
});

export default marketDataFunction;

if (import.meta.main) await serveStandalone(marketDataFunction);
