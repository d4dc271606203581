/**
 * Quotes for a request: from the in-process cache, then the Postgres cache (shared by every
 * instance), then ONE provider call for whatever is still missing, coalesced three ways:
 *
 * 1. In this instance, concurrent requests share in-flight refreshes per symbol (a bounded map of
 *    promises that lives only while a call is in flight: a coalescer, not state).
 * 2. Across instances, a refresh first claims a lease per symbol in Postgres
 *    (internal.quote_refresh_claim, one round trip); symbols another instance holds are waited
 *    for by polling the shared cache until the holder writes them or its lease ends. Leases, not
 *    `pg_try_advisory_xact_lock`: an advisory lock lives as long as its transaction, so it would
 *    pin a pooled connection (the embedded database has exactly one) for the whole upstream call,
 *    up to `MARKET_DATA_TIMEOUT_MS`, and a transaction may be re-run on a transient error, which
 *    must never repeat an upstream call. A lease costs one short statement and expires by itself
 *    if its holder dies.
 * 3. The provider's `429` pauses every call until its Retry-After, in this instance and, through
 *    internal.provider_pauses (checked by the same claim statement), in all of them.
 *
 * When the provider fails, times out, is paused or its breaker is open, each missing symbol is
 * served from a cached quote younger than `MARKET_DATA_MAX_STALE_SECONDS`, marked stale with its
 * age; if any symbol has none, the request is `503 UPSTREAM_UNAVAILABLE` with Retry-After.
 * Nothing is ever made up.
 *
 * @example
 * ```ts
 * import type { Platform } from "../../shared/platform/platform.ts";
 * import { marketDataBreaker, ProviderPause } from "../../shared/upstreams/market_data.ts";
 * import { QuoteProvider } from "./provider.ts";
 * import { MemoryQuoteCache, QuoteStore } from "./quote_cache.ts";
 * import { QuoteService } from "./quotes.ts";
 *
 * declare const platform: Platform;
 * const service = new QuoteService({
 *   store: new QuoteStore(platform.db),
 *   memory: new MemoryQuoteCache(5000),
 *   provider: new QuoteProvider({
 *     url: "https://data.alpaca.markets",
 *     keyId: "key-id",
 *     secretKey: "secret-key",
 *     timeoutMs: 5000,
 *   }),
 *   breaker: marketDataBreaker(platform.breakers),
 *   pause: new ProviderPause(platform.db),
 *   ttlMs: 5_000,
 *   maxStaleMs: 900_000,
 *   timeoutMs: 5000,
 *   now: platform.now,
 *   log: platform.log,
 * });
 * const { quotes, notFound } = await service.get(["AAPL", "MSFT"]);
 * ```
 */
import { delay } from "../../shared/resilience/delay.ts";
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import { CircuitOpen, UpstreamUnavailable } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { fullJitter } from "../../shared/resilience/backoff.ts";
import { type Quote, QuoteProvider } from "./provider.ts";
import {
  MARKET_DATA_UPSTREAM,
  marketDataBreaker,
  ProviderPause,
  ProviderRateLimited,
} from "../../shared/upstreams/market_data.ts";
import type { DeferredHit } from "../../shared/http/rate_limit.ts";
import { type Cached, type CachedRow, MemoryQuoteCache, QuoteStore } from "./quote_cache.ts";

/** A quote as answered, with where it came from and how old it is. */
export interface ServedQuote extends Quote {
  source: "cache" | "live";
  ageSeconds: number;
  stale?: true;
}

export interface QuoteServiceOptions {
  store: QuoteStore;
  memory: MemoryQuoteCache;
  provider: QuoteProvider;
  breaker: Breaker;
  /** The provider's pause, shared with every instance and with tools. */
  pause: ProviderPause;
  ttlMs: number;
  maxStaleMs: number;
  /** The provider call's deadline; a lease lasts this plus a margin for the write. */
  timeoutMs: number;
  now: () => number;
  log: Logger;
}

interface Resolved {
  quote: Cached;
  ageMs: number;
  live: boolean;
}

interface Outcome {
  results: Map<string, Resolved>;
  /** Why some symbols have no result (provider failure, pause, open breaker). */
  error?: unknown;
}

const UPSTREAM = MARKET_DATA_UPSTREAM;
/** Time for the lease holder to write its result after its call returned. */
const LEASE_MARGIN_MS = 2_000;
const POLL_FIRST_MS = 25;
const POLL_MAX_MS = 250;

/** The failures that make us fall back to stale quotes (anything else propagates). */
function isProviderFailure(err: unknown): boolean {
  return err instanceof UpstreamUnavailable || err instanceof CircuitOpen ||
    err instanceof ProviderRateLimited;
}

function retryAfterMs(err: unknown): number {
  if (err instanceof ProviderRateLimited) return err.retryAfterMs;
  if (err instanceof UpstreamUnavailable || err instanceof CircuitOpen) return err.retryAfterMs;
  return 1000;
}

export class QuoteService {
  readonly #o: QuoteServiceOptions;
  /** Symbol → the refresh in flight for it in this instance. */
  readonly #inflight = new Map<string, Promise<Outcome>>();
  constructor(opts: QuoteServiceOptions) {
    this.#o = { ...opts };
  }

  /**
   * Quotes for distinct, valid `symbols`; `notFound` lists those the provider has none for.
   * Throws UpstreamUnavailable (503) when a symbol can be served neither live nor from a quote
   * younger than the stale limit, and DatabaseUnavailable when the database is down.
   */
  async get(
    symbols: readonly string[],
    hit?: DeferredHit,
  ): Promise<{ quotes: Record<string, ServedQuote>; notFound: string[] }> {
    const { memory, store, ttlMs, maxStaleMs } = this.#o;
    const now = this.#o.now();
    const quotes: Record<string, ServedQuote> = {};
    const notFound: string[] = [];
    const served = new Set<string>();
    const put = (symbol: string, quote: Cached, live: boolean, ageMs: number, stale = false) => {
      served.add(symbol);
      if (quote === null) return void notFound.push(symbol);
      quotes[symbol] = {
        ...quote,
        source: live ? "live" : "cache",
        ageSeconds: Math.max(0, Math.floor(ageMs / 1000)),
        ...(stale ? { stale: true as const } : {}),
      };
    };

    for (const s of symbols) {
      const hit = memory.get(s);
      if (hit && now - hit.fetchedAtMs < ttlMs) put(s, hit.quote, false, now - hit.fetchedAtMs);
    }
    let missing = symbols.filter((s) => !served.has(s));
    if (missing.length === 0) {
      await hit?.countAlone(); // the route's rate-limit hit, its only database call
      return { quotes, notFound };
    }

    const stale = new Map<string, CachedRow>();
    // The route's rate-limit hit (if left for us) is counted in the same statement as the read.
    for (const row of await store.read(missing, maxStaleMs, hit)) {
      if (row.ageMs < ttlMs) {
        memory.set(row.symbol, row.quote, now - row.ageMs);
        put(row.symbol, row.quote, false, row.ageMs);
      } else {
        stale.set(row.symbol, row);
      }
    }
    missing = missing.filter((s) => !served.has(s));
    if (missing.length === 0) return { quotes, notFound };

    const { results, error } = await this.#refresh(missing);
    const unresolved = missing.filter((s) => !results.has(s));
    const lacking = unresolved.filter((s) => !stale.has(s));
    if (lacking.length > 0) {
      const reason = error instanceof ProviderRateLimited
        ? "rate limited by the provider"
        : error instanceof CircuitOpen
        ? "calls paused after repeated failures"
        : "failing or too slow";
      throw new UpstreamUnavailable(UPSTREAM, reason, retryAfterMs(error), error);
    }
    for (const [s, r] of results) if (missing.includes(s)) put(s, r.quote, r.live, r.ageMs);
    if (unresolved.length > 0) {
      this.#o.log.warn("serving stale quotes", {
        symbols: unresolved,
        error: error instanceof Error ? error.message : String(error),
      });
      for (const s of unresolved) {
        const row = stale.get(s)!;
        put(s, row.quote, false, row.ageMs, true);
      }
    }
    return { quotes, notFound };
  }

  /** Joins the refreshes in flight for these symbols and starts one batch for the rest. */
  async #refresh(symbols: string[]): Promise<Outcome> {
    const waits = new Set<Promise<Outcome>>();
    const fresh: string[] = [];
    for (const s of symbols) {
      const p = this.#inflight.get(s);
      if (p) waits.add(p);
      else fresh.push(s);
    }
    if (fresh.length > 0) {
      const batch = this.#batch(fresh);
      for (const s of fresh) this.#inflight.set(s, batch);
      const clear = () => {
        for (const s of fresh) if (this.#inflight.get(s) === batch) this.#inflight.delete(s);
      };
      batch.then(clear, clear);
      waits.add(batch);
    }
    const results = new Map<string, Resolved>();
    let error: unknown;
    for (const settled of await Promise.allSettled(waits)) {
      if (settled.status === "rejected") throw settled.reason; // database down: 503 as it is
      for (const [s, r] of settled.value.results) results.set(s, r);
      error ??= settled.value.error;
    }
    return { results, error };
  }

  /** One batch: claim what nobody is refreshing, fetch that, wait for the rest. */
  async #batch(symbols: string[]): Promise<Outcome> {
    const { store, ttlMs, timeoutMs, pause } = this.#o;
    const known = pause.knownMs();
    if (known > 0) return { results: new Map(), error: new ProviderRateLimited(known) };
    const owner = crypto.randomUUID();
    const leaseMs = timeoutMs + LEASE_MARGIN_MS;
    const { claimed, pausedMs } = await store.claim(symbols, owner, ttlMs, leaseMs);
    if (pausedMs > 0) {
      pause.note(pausedMs);
      return { results: new Map(), error: new ProviderRateLimited(pausedMs) };
    }
    const mine = new Set(claimed);
    const others = symbols.filter((s) => !mine.has(s));
    const none: Outcome = { results: new Map() };
    const [a, b] = await Promise.all([
      claimed.length > 0 ? this.#fetch(claimed, owner) : none,
      others.length > 0 ? this.#waitFor(others, leaseMs) : none,
    ]);
    return { results: new Map([...a.results, ...b.results]), error: a.error ?? b.error };
  }

  /** The provider call for claimed symbols; stores the result (and frees the leases). */
  async #fetch(symbols: string[], owner: string): Promise<Outcome> {
    const { provider, breaker, store, memory } = this.#o;
    let got: Map<string, Quote>;
    try {
      got = await breaker.run(() => provider.latest(symbols));
    } catch (err) {
      if (err instanceof ProviderRateLimited) {
        await this.#o.pause.record(err.retryAfterMs).catch((e) =>
          this.#o.log.warn("could not share the provider's pause", { error: e })
        );
      }
      await store.release(symbols, owner).catch(() => {}); // else they expire with the lease
      if (isProviderFailure(err)) return { results: new Map(), error: err };
      throw err;
    }
    const values = new Map<string, Cached>(symbols.map((s) => [s, got.get(s) ?? null]));
    await store.save(values, owner);
    const fetchedAt = this.#o.now();
    const results = new Map<string, Resolved>();
    for (const [s, quote] of values) {
      memory.set(s, quote, fetchedAt);
      results.set(s, { quote, ageMs: 0, live: true });
    }
    return { results };
  }

  /** Waits for symbols another instance is refreshing: until written, unleased, or timed out. */
  async #waitFor(symbols: string[], leaseMs: number): Promise<Outcome> {
    const { store, ttlMs, memory } = this.#o;
    const deadline = this.#o.now() + leaseMs;
    const results = new Map<string, Resolved>();
    let pending = symbols;
    for (let attempt = 0; pending.length > 0; attempt++) {
      const next: string[] = [];
      for (const row of await store.poll(pending, ttlMs)) {
        if (row.fresh) {
          memory.set(row.symbol, row.fresh.quote, this.#o.now() - row.fresh.ageMs);
          results.set(row.symbol, { ...row.fresh, live: false });
        } else if (row.leased) {
          next.push(row.symbol);
        }
      }
      pending = next;
      if (pending.length === 0 || this.#o.now() >= deadline) break;
      // The suite's one backoff: instances waiting on one lease do not poll in step.
      await delay(fullJitter(attempt, 2 * POLL_FIRST_MS, POLL_MAX_MS));
    }
    const unresolved = symbols.filter((s) => !results.has(s));
    return {
      results,
      error: unresolved.length > 0
        ? new UpstreamUnavailable(UPSTREAM, "another instance's refresh did not complete")
        : undefined,
    };
  }
}

/** The provider's settings (`MARKET_DATA_API_*`). */
export interface ProviderConfig {
  MARKET_DATA_API_URL: string;
  MARKET_DATA_API_KEY_ID: string;
  MARKET_DATA_API_SECRET_KEY: string;
}

/** The service wired to the platform: Postgres cache, in-process layer, provider and breaker. */
export function quoteServiceFor(config: ProviderConfig, ctx: Platform): QuoteService {
  const l = ctx.limits;
  return new QuoteService({
    store: new QuoteStore(ctx.db),
    memory: new MemoryQuoteCache(l.MARKET_DATA_MEMORY_CACHE_ENTRIES),
    provider: new QuoteProvider({
      url: config.MARKET_DATA_API_URL,
      keyId: config.MARKET_DATA_API_KEY_ID,
      secretKey: config.MARKET_DATA_API_SECRET_KEY,
      timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
      fetch: ctx.fetch,
      now: ctx.now,
    }),
    breaker: marketDataBreaker(ctx.breakers),
    pause: new ProviderPause(ctx.db, ctx.now),
    ttlMs: l.MARKET_DATA_CACHE_TTL_SECONDS * 1000,
    maxStaleMs: l.MARKET_DATA_MAX_STALE_SECONDS * 1000,
    timeoutMs: l.MARKET_DATA_TIMEOUT_MS,
    now: ctx.now,
    log: ctx.log,
  });
}
