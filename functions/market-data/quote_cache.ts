/**
 * The two cache layers of quotes: a bounded in-process map (least recently used out first) in
 * front of the Postgres cache shared by every instance (internal.quote_cache), plus the Postgres
 * side of refresh coordination (leases and the provider's pause).
 *
 * A cached value is a Quote, or `null` when the provider had no quote for the symbol (a negative
 * entry, kept for the same TTL so unknown symbols do not cost an upstream call each time).
 * Ages are computed with the database's clock, so instances with skewed clocks agree. Every method
 * is one statement with its values as literals: one database round trip (shared/db/sql_literal.ts).
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { MemoryQuoteCache, QuoteStore } from "./quote_cache.ts";
 *
 * declare const db: Database;
 * const memory = new MemoryQuoteCache(5000);
 * const store = new QuoteStore(db);
 * const rows = await store.read(["AAPL"], 900_000); // [{ symbol, quote, ageMs }]
 * ```
 */
import type { Database } from "../../shared/db/db.ts";
import type { DeferredHit, HitRow } from "../../shared/http/rate_limit.ts";
import { jsonLiteral, literal } from "../../shared/db/sql_literal.ts";
import type { Quote } from "./provider.ts";

/** A text[] literal of symbols (already validated against ^[A-Z][A-Z.]{0,9}$). */
function symbolArray(symbols: readonly string[]): string {
  return `array[${symbols.map(literal).join(", ")}]::text[]`;
}

export type Cached = Quote | null;

export interface CachedRow {
  symbol: string;
  quote: Cached;
  ageMs: number;
}

/** A bounded map; `get` refreshes recency, `set` evicts the least recently used past `max`. */
export class MemoryQuoteCache {
  readonly #max: number;
  readonly #map = new Map<string, { quote: Cached; fetchedAtMs: number }>();

  constructor(max: number) {
    if (!(max > 0)) throw new Error(`Memory cache size must be positive, got ${max}`);
    this.#max = max;
  }

  get(symbol: string): { quote: Cached; fetchedAtMs: number } | undefined {
    const hit = this.#map.get(symbol);
    if (hit) {
      this.#map.delete(symbol);
      this.#map.set(symbol, hit);
    }
    return hit;
  }

  set(symbol: string, quote: Cached, fetchedAtMs: number): void {
    const current = this.#map.get(symbol);
    if (current && current.fetchedAtMs > fetchedAtMs) return; // never replace newer with older
    this.#map.delete(symbol);
    this.#map.set(symbol, { quote, fetchedAtMs });
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value!);
  }

  get size(): number {
    return this.#map.size;
  }
}

/** The Postgres side. Every method throws DatabaseUnavailable when the database is down. */
export class QuoteStore {
  readonly #db: Database;

  constructor(db: Database) {
    this.#db = db;
  }

  /**
   * Cached rows of `symbols` younger than `maxAgeMs`. With `hit` (the route's deferred rate-limit
   * hit), counts it in the same statement and settles it, reading nothing when it is denied
   * (`hit.settle` then throws 429).
   */
  async read(
    symbols: readonly string[],
    maxAgeMs: number,
    hit?: DeferredHit,
  ): Promise<CachedRow[]> {
    const cached = `select symbol, quote,
          floor(extract(epoch from (clock_timestamp() - fetched_at)) * 1000)::bigint as age_ms
        from internal.quote_cache
        where symbol = any(${symbolArray(symbols)})
          and fetched_at > clock_timestamp() - make_interval(secs => ${literal(maxAgeMs / 1000)})`;
    type Row = { symbol: string | null; quote: Cached; age_ms: string | null } & Partial<HitRow>;
    const rows = await this.#db.query((sql) =>
      sql.unsafe<Row[]>(
        hit
          ? `select h.allowed, h.remaining, h.reset_ms, c.symbol, c.quote, c.age_ms
            from internal.rate_limit_hit(${hit.sqlArguments()}) h
            left join lateral (${cached}) c on h.allowed`
          : cached,
      )
    );
    if (hit) {
      const [h] = rows;
      hit.settle({ allowed: h.allowed!, remaining: h.remaining!, reset_ms: h.reset_ms! });
    }
    return rows.filter((r) => r.symbol !== null).map((r) => ({
      symbol: r.symbol!,
      quote: r.quote,
      ageMs: Number(r.age_ms),
    }));
  }

  /**
   * Claims the refresh of those `symbols` that have no quote fresher than `freshMs` and no live
   * lease, for `leaseMs`. Returns the claimed symbols, or the provider's pause if one is on.
   */
  async claim(
    symbols: readonly string[],
    owner: string,
    freshMs: number,
    leaseMs: number,
  ): Promise<{ claimed: string[]; pausedMs: number }> {
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ claimed: string | null; paused_ms: number | null }[]>(
        `select claimed, paused_ms from internal.quote_refresh_claim(
          ${symbolArray([...symbols].sort())}, ${literal(owner)}::uuid, ${Math.floor(freshMs)}::int,
          ${Math.ceil(leaseMs)}::int)`,
      )
    );
    const paused = rows.find((r) => r.paused_ms !== null);
    if (paused) return { claimed: [], pausedMs: paused.paused_ms! };
    return { claimed: rows.map((r) => r.claimed!), pausedMs: 0 };
  }

  /** Stores what a refresh got (null for symbols the provider has no quote for) and frees the leases. */
  save(results: Map<string, Cached>, owner: string): Promise<void> {
    const entries = Object.fromEntries(results);
    // One statement (one transaction): the cache rows, then the leases freed.
    return this.#db.query(async (sql) => {
      await sql.unsafe(`
        with saved as (
          insert into internal.quote_cache (symbol, quote, fetched_at)
          select key, value, clock_timestamp() from jsonb_each(${jsonLiteral(entries)})
          order by key
          on conflict (symbol) do update set quote = excluded.quote, fetched_at = excluded.fetched_at
          returning symbol
        )
        delete from internal.quote_refresh_leases
        where symbol in (select symbol from saved) and owner = ${literal(owner)}::uuid`);
    });
  }

  /** Frees leases after a failed refresh, so waiting instances stop waiting. */
  release(symbols: readonly string[], owner: string): Promise<void> {
    return this.#db.query(async (sql) => {
      await sql.unsafe(`delete from internal.quote_refresh_leases
        where symbol = any(${symbolArray(symbols)}) and owner = ${literal(owner)}::uuid`);
    });
  }

  /**
   * For symbols another instance is refreshing: which have a fresh quote now (with it), and
   * which are neither fresh nor leased any more (their refresh failed).
   */
  async poll(symbols: readonly string[], freshMs: number) {
    const rows = await this.#db.query((sql) =>
      sql.unsafe<
        { symbol: string; quote: Cached | undefined; age_ms: string | null; leased: boolean }[]
      >(`
        select s.sym as symbol, c.quote,
          floor(extract(epoch from (clock_timestamp() - c.fetched_at)) * 1000)::bigint as age_ms,
          l.symbol is not null as leased
        from unnest(${symbolArray(symbols)}) as s(sym)
        left join internal.quote_cache c on c.symbol = s.sym
          and c.fetched_at > clock_timestamp() - make_interval(secs => ${literal(freshMs / 1000)})
        left join internal.quote_refresh_leases l on l.symbol = s.sym
          and l.leased_until > clock_timestamp()`)
    );
    return rows.map((r) => ({
      symbol: r.symbol,
      fresh: r.age_ms !== null ? { quote: r.quote ?? null, ageMs: Number(r.age_ms) } : undefined,
      leased: r.leased,
    }));
  }
}
