/**
 * Historical bars from the market-data provider, one page at a time: Alpaca Market Data API v2
 * `GET /v2/stocks/{symbol}/bars?timeframe&start&end&limit&adjustment&page_token` with the
 * `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` headers
 * (https://docs.alpaca.markets/reference/stockbarsingle). Alpaca answers
 * `{"bars": [{"t", "o", "h", "l", "c", "v", "n", "vw"}], "symbol", "next_page_token"}`, at most
 * 10,000 bars a page, oldest first; `next_page_token` is null on the last page.
 *
 * `pages()` is an async generator: the next page is fetched only when the consumer asks for it,
 * so a run holds one page at a time however long the range. Each page goes through the
 * market-data breaker with its own deadline; the provider's `429` pauses every instance of both
 * functions until its `Retry-After` (shared/upstreams/market_data.ts). Every failure is a typed 503 (nothing partial is ever presented as complete).
 *
 * @example
 * ```ts
 * import { breakerSettings } from "../../shared/platform/platform.ts";
 * import type { Database } from "../../shared/db/db.ts";
 * import { marketDataBreaker, ProviderPause } from "../../shared/upstreams/market_data.ts";
 * import { BarsProvider } from "./bars.ts";
 * import { Backtest } from "./backtest.ts";
 * import { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 *
 * declare const db: Database;
 * const provider = new BarsProvider({
 *   url: "https://data.alpaca.markets",
 *   keyId: "key-id",
 *   secretKey: "secret-key",
 *   timeoutMs: 10_000,
 *   pageSize: 10_000,
 *   breaker: marketDataBreaker(new Breakers(breakerSettings(parseLimits({})))),
 *   pause: new ProviderPause(db),
 * });
 * const query = {
 *   symbol: "AAPL",
 *   timeframe: "1Day",
 *   start: "2024-01-01T00:00:00Z",
 *   end: "2025-01-01T00:00:00Z",
 *   maxBars: 1_000_000,
 * };
 * const strategy = new Backtest({ kind: "buy_and_hold" }, 10_000);
 * for await (const closes of provider.pages(query, AbortSignal.timeout(30_000))) {
 *   for (const close of closes) strategy.onClose(close);
 * }
 * ```
 */
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import { HttpError, UpstreamUnavailable } from "../../shared/errors.ts";
import {
  MARKET_DATA_UPSTREAM,
  marketDataGet,
  type ProviderPause,
  providerPauseMs,
  ProviderRateLimited,
} from "../../shared/upstreams/market_data.ts";

const UPSTREAM = MARKET_DATA_UPSTREAM;
/** Alpaca's largest page. */
export const ALPACA_MAX_PAGE = 10_000;
/** Bars outside these prices are not data we can trust (and would overflow the equity). */
const MIN_PRICE = 1e-6;
const MAX_PRICE = 1e9;

/** The range holds more bars than one run may read. */
export class TooManyBars extends HttpError {
  constructor(maxBars: number) {
    super(
      422,
      "BACKTEST_TOO_LARGE",
      `The range holds more than ${maxBars} bars; shorten it or use a longer timeframe.`,
    );
  }
}

export interface BarsQuery {
  symbol: string;
  timeframe: string;
  /** RFC 3339 times. */
  start: string;
  end: string;
  /** Past this many bars the run stops with TooManyBars. */
  maxBars: number;
}

export interface BarsProviderOptions {
  url: string;
  keyId: string;
  secretKey: string;
  /** Deadline of each page's call. */
  timeoutMs: number;
  /** Bars asked per page (at most Alpaca's 10,000). */
  pageSize: number;
  breaker: Breaker;
  /** The provider's pause, shared with every instance and with market-data. */
  pause: ProviderPause;
  fetch?: typeof fetch;
  now?: () => number;
}

interface Page {
  closes: number[];
  lastTime: string;
  next: string | null;
}

export class BarsProvider {
  readonly #o: BarsProviderOptions;
  readonly #now: () => number;

  constructor(opts: BarsProviderOptions) {
    if (!(opts.pageSize >= 1 && opts.pageSize <= ALPACA_MAX_PAGE)) {
      throw new Error(`Page size must be 1 to ${ALPACA_MAX_PAGE}, got ${opts.pageSize}`);
    }
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
  }

  /**
   * The closes of each page in time order, fetched lazily. Throws ProviderRateLimited,
   * CircuitOpen or UpstreamUnavailable (503), TooManyBars (422), or the signal's reason.
   */
  async *pages(q: BarsQuery, signal: AbortSignal): AsyncGenerator<number[], void, undefined> {
    let token: string | null = null;
    let seen = 0;
    let lastTime = "";
    do {
      signal.throwIfAborted();
      // One more than the run may read, so a range that holds too many is told apart.
      const limit = Math.min(this.#o.pageSize, q.maxBars - seen + 1);
      const page: Page = await this.#o.breaker.run(() =>
        this.#fetchPage(q, limit, token, lastTime, signal)
      );
      seen += page.closes.length;
      if (seen > q.maxBars) throw new TooManyBars(q.maxBars);
      lastTime = page.lastTime;
      token = page.next;
      if (page.closes.length > 0) yield page.closes;
    } while (token !== null);
  }

  async #fetchPage(
    q: BarsQuery,
    limit: number,
    token: string | null,
    after: string,
    signal: AbortSignal,
  ): Promise<Page> {
    // The shared pause is read once a run (its first page); later pages see this instance's.
    const pausedMs = token === null ? await this.#o.pause.remainingMs() : this.#o.pause.knownMs();
    if (pausedMs > 0) throw new ProviderRateLimited(pausedMs);
    const url = new URL(`${this.#o.url}/v2/stocks/${encodeURIComponent(q.symbol)}/bars`);
    url.searchParams.set("timeframe", q.timeframe);
    url.searchParams.set("start", q.start);
    url.searchParams.set("end", q.end);
    url.searchParams.set("limit", String(limit));
    // Split- and dividend-adjusted, so a split is not read as a crash.
    url.searchParams.set("adjustment", "all");
    if (token !== null) url.searchParams.set("page_token", token);
    const res = await marketDataGet(url, { ...this.#o, signal });
    if (res.status === 429) {
      const ms = providerPauseMs(res.headers, this.#now());
      await this.#o.pause.record(ms);
      throw new ProviderRateLimited(ms);
    }
    if (res.status !== 200) throw new UpstreamUnavailable(UPSTREAM, `HTTP ${res.status}`);
    return readPage(res.body, q.symbol, after, limit);
  }
}

const unusable = () => new UpstreamUnavailable(UPSTREAM, "unusable answer");

/**
 * The closes of one page, checked bar by bar: times strictly increasing across pages, closes
 * finite and within bounds. Checked by hand rather than with zod: this runs up to a million
 * times a request, and a schema per bar costs several times the JSON parse.
 */
function readPage(body: unknown, symbol: string, after: string, limit: number): Page {
  if (typeof body !== "object" || body === null) throw unusable();
  const { bars, next_page_token: next, symbol: answered } = body as Record<string, unknown>;
  if (answered !== undefined && answered !== symbol) throw unusable();
  if (next !== null && next !== undefined && (typeof next !== "string" || next.length > 1024)) {
    throw unusable();
  }
  // Alpaca sends `"bars": null` for a range without bars.
  const list = bars ?? [];
  if (!Array.isArray(list) || list.length > limit) throw unusable();
  const closes = new Array<number>(list.length);
  let last = after;
  for (let i = 0; i < list.length; i++) {
    const bar = list[i] as { t?: unknown; c?: unknown } | null;
    const c = bar?.c;
    const t = bar?.t;
    // RFC 3339 times in one format compare as strings; a repeat or step back is not a series.
    if (
      typeof c !== "number" || !(c >= MIN_PRICE && c <= MAX_PRICE) ||
      typeof t !== "string" || t.length > 40 || !(t > last)
    ) {
      throw unusable();
    }
    closes[i] = c;
    last = t;
  }
  const token = typeof next === "string" && next !== "" ? next : null;
  // A page token with no bars would loop on a misbehaving provider; a short last page is fine.
  if (token !== null && list.length === 0) throw unusable();
  return { closes, lastTime: last, next: token };
}
