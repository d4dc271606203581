/**
 * The Alpaca-compatible Market Data API v2 (quotes, bars) as one upstream, shared by market-data
 * and tools: one `GET` with the key headers, the deadline and the answer read once; one error
 * for the provider's own rate limit (`ProviderRateLimited`), its pause read from `Retry-After`
 * (seconds or a date, RFC 9110 §10.2.3), else `X-RateLimit-Reset` (epoch seconds, Alpaca's
 * header), else a minute — bounded to [1 s, 10 min]; one pause that holds across every instance
 * of both functions (`ProviderPause`, in `internal.provider_pauses`); and one breaker
 * (`marketDataBreaker`), which counts a rate limit as load, not as an outage.
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
import { ServiceUnavailable, UpstreamUnavailable } from "../errors.ts";
import type { Database } from "../db/db.ts";
import { literal } from "../db/sql_literal.ts";
import type { Breaker, Breakers } from "../resilience/circuit_breaker.ts";
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

/** The provider's own rate limit: no call before `retryAfterMs` from now (`503` with Retry-After). */
export class ProviderRateLimited extends ServiceUnavailable {
  constructor(retryAfterMs: number) {
    super(
      "UPSTREAM_RATE_LIMITED",
      "The market-data provider is rate limiting us; nothing was run.",
      retryAfterMs,
    );
    this.name = "ProviderRateLimited";
  }
}

/**
 * This instance's breaker for the provider, the same one for market-data and tools. Its rate
 * limit is handled by the pause, so it is not counted as a failure of the provider.
 */
export function marketDataBreaker(breakers: Breakers): Breaker {
  return breakers.get("market-data", { isHealthy: (err) => err instanceof ProviderRateLimited });
}

/**
 * The provider's pause after a `429`, for every instance of both functions: recorded in
 * `internal.provider_pauses` (a longer pause wins), and remembered in this instance so that
 * calls during a known pause cost no round trip.
 */
export class ProviderPause {
  readonly #db: Database;
  readonly #now: () => number;
  #until = 0;

  constructor(db: Database, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
  }

  /** Ms left of a pause this instance knows of (0 when none): no round trip. */
  knownMs(): number {
    return Math.max(0, this.#until - this.#now());
  }

  /** Takes note of a pause another instance recorded (as read by a statement of the caller's). */
  note(ms: number): void {
    this.#until = Math.max(this.#until, this.#now() + ms);
  }

  /** Ms left of the pause, asking the database when this instance knows of none (one statement). */
  async remainingMs(): Promise<number> {
    const known = this.knownMs();
    if (known > 0) return known;
    const [row] = await this.#db.query((sql) =>
      sql<{ ms: number | null }[]>`
        select (extract(epoch from paused_until - clock_timestamp()) * 1000)::int as ms
        from internal.provider_pauses
        where provider = 'market-data' and paused_until > clock_timestamp()`
    );
    if (row?.ms) this.note(row.ms);
    return row?.ms ?? 0;
  }

  /** Records a pause for every instance (a longer one wins). */
  async record(ms: number): Promise<void> {
    this.note(ms);
    await this.#db.query(async (sql) => {
      await sql.unsafe(`insert into internal.provider_pauses (provider, paused_until)
        values ('market-data', clock_timestamp() + make_interval(secs => ${literal(ms / 1000)}))
        on conflict (provider) do update
          set paused_until = greatest(internal.provider_pauses.paused_until, excluded.paused_until)`);
    });
  }
}
