/**
 * The tools this function offers, built from its configuration and limits: `options.greeks`
 * (greeks.ts) and `backtest.run` (backtest.ts, bars from the market-data provider, bars.ts,
 * behind the same "market-data" breaker as functions/market-data).
 *
 * @example
 * ```ts
 * import { breakerSettings } from "../../shared/platform/platform.ts";
 * import { toolCatalog } from "./catalog.ts";
 * import { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 * import type { Database } from "../../shared/db/db.ts";
 *
 * declare const db: Database;
 * const limits = parseLimits({});
 * const registry = toolCatalog({
 *   db,
 *   config: {
 *     MARKET_DATA_API_URL: "https://data.alpaca.markets",
 *     MARKET_DATA_API_KEY_ID: "key-id",
 *     MARKET_DATA_API_SECRET_KEY: "secret-key",
 *   },
 *   limits,
 *   breakers: new Breakers(breakerSettings(limits)),
 *   fetch,
 *   now: Date.now,
 * });
 * registry.list().map((t) => t.name); // ["options.greeks", "backtest.run"]
 * ```
 */
import { marketDataBreaker, ProviderPause } from "../../shared/upstreams/market_data.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { backtestTool } from "./backtest.ts";
import { BarsProvider } from "./bars.ts";
import { greeksTool } from "./greeks.ts";
import { ToolRegistry } from "./registry.ts";

/** What the catalog is built from. */
export type CatalogContext = Pick<Platform, "db" | "limits" | "breakers" | "fetch" | "now"> & {
  config: {
    MARKET_DATA_API_URL: string;
    MARKET_DATA_API_KEY_ID: string;
    MARKET_DATA_API_SECRET_KEY: string;
  };
};

/** The registry of every tool, each with its limits (`TOOLS_*`). */
export function toolCatalog({ config, limits: l, ...ctx }: CatalogContext): ToolRegistry {
  const provider = new BarsProvider({
    url: config.MARKET_DATA_API_URL,
    keyId: config.MARKET_DATA_API_KEY_ID,
    secretKey: config.MARKET_DATA_API_SECRET_KEY,
    timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
    pageSize: l.TOOLS_BACKTEST_PAGE_SIZE,
    // The same upstream as functions/market-data: the same breaker and pause.
    breaker: marketDataBreaker(ctx.breakers),
    pause: new ProviderPause(ctx.db, ctx.now),
    fetch: ctx.fetch,
    now: ctx.now,
  });
  return new ToolRegistry([
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
}
