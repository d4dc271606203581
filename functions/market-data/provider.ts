/**
 * The market-data provider: Alpaca Market Data API v2 latest quotes,
 * `GET /v2/stocks/quotes/latest?symbols=A,B` with the `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`
 * headers (https://docs.alpaca.markets/reference/stocklatestquotes-1). One call per batch; the
 * answer is validated field by field, so nothing but the provider's own numbers is ever served.
 *
 * Alpaca's fields: `bp`/`bs` bid price/size, `ap`/`as` ask price/size, `t` RFC 3339 timestamp.
 * Symbols it has no quote for are absent from `quotes` (we report them as not found). Its rate
 * limit answers `429`; the pause comes from `Retry-After`, else `X-RateLimit-Reset` (epoch
 * seconds, https://docs.alpaca.markets/docs/about-market-data-api#rate-limit), else one minute
 * (Alpaca's limits are per minute).
 *
 * @example
 * ```ts
 * import { QuoteProvider } from "./provider.ts";
 *
 * const provider = new QuoteProvider({
 *   url: "https://data.alpaca.markets",
 *   keyId: "key-id",
 *   secretKey: "secret-key",
 *   timeoutMs: 5000,
 * });
 * const quotes = await provider.latest(["AAPL", "MSFT"]); // Map<symbol, Quote>
 * ```
 */
import * as z from "../../shared/zod.ts";
import { UpstreamUnavailable } from "../../shared/errors.ts";
import {
  MARKET_DATA_UPSTREAM,
  marketDataGet,
  providerPauseMs,
  ProviderRateLimited,
} from "../../shared/upstreams/market_data.ts";

/** A quote as this API serves it. */
export interface Quote {
  bid: number;
  ask: number;
  bidSize: number;
  askSize: number;
  timestamp: string;
}

export interface ProviderOptions {
  url: string;
  keyId: string;
  secretKey: string;
  timeoutMs: number;
  fetch?: typeof fetch;
  now?: () => number;
}

const UPSTREAM = MARKET_DATA_UPSTREAM;

const price = z.number().finite().nonnegative();
const size = z.number().finite().nonnegative();
const AlpacaQuote = z.object({
  bp: price,
  bs: size,
  ap: price,
  as: size,
  t: z.string().min(1).max(64).refine((v) => !Number.isNaN(Date.parse(v)), "must be a time"),
});
const AlpacaLatest = z.object({ quotes: z.record(z.string(), z.unknown()) });

export class QuoteProvider {
  readonly #o: ProviderOptions;
  readonly #now: () => number;

  constructor(opts: ProviderOptions) {
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Latest quotes of `symbols` in ONE call. Throws ProviderRateLimited on `429`, and
   * UpstreamUnavailable on a timeout, a failed connection, another error status or an answer
   * that does not validate.
   */
  async latest(symbols: readonly string[]): Promise<Map<string, Quote>> {
    const url = new URL(`${this.#o.url}/v2/stocks/quotes/latest`);
    url.searchParams.set("symbols", symbols.join(","));
    const res = await marketDataGet(url, this.#o);
    if (res.status === 429) {
      throw new ProviderRateLimited(providerPauseMs(res.headers, this.#now()));
    }
    if (res.status !== 200) throw new UpstreamUnavailable(UPSTREAM, `HTTP ${res.status}`);
    const parsed = AlpacaLatest.safeParse(res.body);
    if (!parsed.success) throw new UpstreamUnavailable(UPSTREAM, "unusable answer");
    const wanted = new Set(symbols);
    const out = new Map<string, Quote>();
    for (const [symbol, raw] of Object.entries(parsed.data.quotes)) {
      if (!wanted.has(symbol)) continue;
      const q = AlpacaQuote.safeParse(raw);
      // One malformed quote makes the answer untrustworthy: no partial guesses.
      if (!q.success) throw new UpstreamUnavailable(UPSTREAM, "unusable answer");
      out.set(symbol, {
        bid: q.data.bp,
        ask: q.data.ap,
        bidSize: q.data.bs,
        askSize: q.data.as,
        timestamp: q.data.t,
      });
    }
    return out;
  }
}
