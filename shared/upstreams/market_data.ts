/**
 * One `GET` to an Alpaca-compatible Market Data API v2 (quotes, bars), shared by market-data and
 * tools: the key headers, the deadline, the answer read once, and the provider's own rate limit
 * read from `Retry-After` (seconds or a date, RFC 9110 §10.2.3), else `X-RateLimit-Reset` (epoch
 * seconds, Alpaca's header), else a minute — bounded to [1 s, 10 min].
 *
 * @example
 * ```ts
 * import { marketDataGet } from "./market_data.ts";
 *
 * const res = await marketDataGet(new URL("https://data.alpaca.markets/v2/stocks/quotes/latest?symbols=AAPL"), {
 *   keyId: "key",
 *   secretKey: "secret",
 *   timeoutMs: 5_000,
 * });
 * if (res.status === 200) console.info(res.body);
 * ```
 */
import { UpstreamUnavailable } from "../errors.ts";
import { fetchWithDeadline } from "../resilience/http_client.ts";

/** The upstream's name in errors and breakers. */
export const MARKET_DATA_UPSTREAM = "market-data provider";

const DEFAULT_PAUSE_MS = 60_000;
const MAX_PAUSE_MS = 10 * 60_000;

export interface MarketDataRequest {
  keyId: string;
  secretKey: string;
  timeoutMs: number;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

export interface MarketDataAnswer {
  status: number;
  headers: Headers;
  /** The parsed JSON of a 2xx answer (undefined when it is not JSON); nothing otherwise. */
  body: unknown;
}

/**
 * The provider's answer. Throws UpstreamUnavailable when it is unreachable or too slow, or the
 * signal's reason when the caller gave up.
 */
export async function marketDataGet(
  url: URL,
  opts: MarketDataRequest,
): Promise<MarketDataAnswer> {
  try {
    return await fetchWithDeadline(
      url,
      {
        headers: {
          "apca-api-key-id": opts.keyId,
          "apca-api-secret-key": opts.secretKey,
          accept: "application/json",
        },
      },
      {
        timeoutMs: opts.timeoutMs,
        upstream: MARKET_DATA_UPSTREAM,
        fetch: opts.fetch,
        signal: opts.signal,
      },
      async (r) => ({
        status: r.status,
        headers: r.headers,
        body: r.ok ? await r.json().catch(() => undefined) : await r.body?.cancel(),
      }),
    );
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw new UpstreamUnavailable(MARKET_DATA_UPSTREAM, "unreachable or timed out", 1000, err);
  }
}

/** How long the provider asks to be left alone after a `429`, in ms from `now`. */
export function providerPauseMs(headers: Headers, now: number): number {
  const retryAfter = headers.get("retry-after")?.trim();
  let ms: number | undefined;
  if (retryAfter && /^\d+$/.test(retryAfter)) {
    ms = Number(retryAfter) * 1000;
  } else if (retryAfter && !Number.isNaN(Date.parse(retryAfter))) {
    ms = Date.parse(retryAfter) - now;
  } else {
    const reset = headers.get("x-ratelimit-reset");
    if (reset && /^\d+$/.test(reset)) ms = Number(reset) * 1000 - now;
  }
  return Math.min(MAX_PAUSE_MS, Math.max(1000, ms ?? DEFAULT_PAUSE_MS));
}
