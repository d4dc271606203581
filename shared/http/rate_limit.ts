/**
 * Rate limiting that holds across all instances: a sliding window per key in Postgres (60
 * sub-buckets, the oldest counted in full, so never looser than the quota), checked and updated
 * in one round trip (`internal.rate_limit_hit`) by `rateLimit()`, or in the route's next
 * statement (an idempotency claim) by `deferRateLimit()`. Idle keys are purged in the background. Named policies per route,
 * the IETF httpapi RateLimit fields (draft -11) on every response, `429` with `Retry-After`.
 *
 * Written here rather than with rate-limiter-flexible: its Postgres store needs node-postgres
 * and creates its table at run time, so it would bypass this suite's pool, its recovery gate
 * (fail fast with 503 when the database is down) and its migrations. The only in-process state
 * is a bounded cache of keys known to be blocked until a time: it can only deny, never allow.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Database } from "../db/db.ts";
 * import { rateLimit } from "./rate_limit.ts";
 *
 * declare const db: Database;
 * const app = new Hono();
 * const perUser = rateLimit({
 *   db,
 *   policy: "orders",
 *   quota: 60,
 *   windowSeconds: 60,
 *   key: (c) => c.req.header("x-user"),
 * });
 * app.post("/", perUser, (c) => c.text("ok"));
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Database } from "../db/db.ts";
import { TooManyRequests } from "../errors.ts";
import { housekeeping } from "../resilience/housekeeping.ts";
import type { Logger } from "../logger.ts";
import { literal } from "../db/sql_literal.ts";

export interface RateLimitPolicy {
  /** Policy name, in the headers and the stored key. */
  policy: string;
  quota: number;
  windowSeconds: number;
  /**
   * The platform's counters by policy (`Platform.rateLimits`, shown by `status`); limiters of one
   * policy share an entry. Without it the limiter counts for itself only.
   */
  stats?: RateLimitStats;
  /**
   * Purging this policy's keys idle past its window (housekeeping, at most once per interval per
   * instance); without it nothing is purged here.
   */
  purge?: RateLimitPurge;
}

/** How idle keys are purged (RATE_LIMIT_PURGE_INTERVAL_SECONDS, RATE_LIMIT_PURGE_BATCH_SIZE). */
export interface RateLimitPurge {
  intervalSeconds: number;
  batchSize: number;
  log: Pick<Logger, "info" | "warn">;
  background?: (work: Promise<unknown>) => void;
}

export interface Decision {
  allowed: boolean;
  remaining: number;
  /** Ms until a slot frees up (the retry delay when denied). */
  resetMs: number;
}

export interface RateLimitCounters {
  allowed: number;
  limited: number;
}

/** One platform's counters by policy, for `status`. */
export type RateLimitStats = Map<string, RateLimitCounters>;

/** At most this many keys are remembered as blocked in-process. */
const BLOCKED_CACHE_MAX = 10_000;

/** One policy's limiter. */
export class RateLimiter {
  readonly #db: Database;
  readonly #p: RateLimitPolicy;
  readonly #now: () => number;
  readonly #blocked = new Map<string, number>();
  readonly #purgeIfDue: () => void;
  readonly policyHeader: string;
  readonly counters: RateLimitCounters;

  constructor(db: Database, policy: RateLimitPolicy, now: () => number = Date.now) {
    if (!/^[a-z0-9_-]+$/.test(policy.policy)) {
      throw new Error(`Policy name is not a token: ${policy.policy}`);
    }
    if (!(policy.quota > 0 && policy.windowSeconds > 0)) {
      throw new Error(`Policy ${policy.policy} needs a positive quota and window`);
    }
    this.#db = db;
    this.#p = { policy: policy.policy, quota: policy.quota, windowSeconds: policy.windowSeconds };
    this.#now = now;
    this.policyHeader = `"${policy.policy}";q=${policy.quota};w=${policy.windowSeconds}`;
    this.counters = policy.stats?.get(policy.policy) ?? { allowed: 0, limited: 0 };
    policy.stats?.set(policy.policy, this.counters);
    const purge = policy.purge;
    // The first purge at a random point of the first interval, so instances do not align.
    this.#purgeIfDue = purge
      ? housekeeping({
        name: `rate-limit keys (${policy.policy})`,
        intervalMs: purge.intervalSeconds * 1000,
        run: () => this.purge(purge.batchSize),
        log: purge.log,
        background: purge.background,
        now,
        firstAtRandom: true,
      })
      : () => {};
  }

  /** Deletes up to `batchSize` of this policy's keys idle past its window; safe from any number of instances. */
  purge(batchSize: number): Promise<number> {
    return this.#db.query(async (sql) => {
      const [{ n }] = await sql<{ n: number }[]>`
        select internal.rate_limits_purge(${`${this.#p.policy}:`}, ${
        this.#p.windowSeconds * 1000
      }, ${batchSize}) as n`;
      return n;
    });
  }

  /** The in-process answer for `key` when it is known to be blocked (no database call), else undefined. */
  blocked(key: string): Decision | undefined {
    const blockedUntil = this.#blocked.get(key);
    if (blockedUntil === undefined) return undefined;
    const now = this.#now();
    if (blockedUntil > now) {
      this.counters.limited++;
      return { allowed: false, remaining: 0, resetMs: blockedUntil - now };
    }
    this.#blocked.delete(key);
    return undefined;
  }

  /**
   * The arguments of `internal.rate_limit_hit` for `key`, as SQL literals, for a statement that
   * counts the hit together with other work (`internal.idempotency_claim_limited`); pass its
   * answer to `settle`.
   */
  hitArguments(key: string): string {
    return `${literal(`${this.#p.policy}:${key}`)}, ${this.#p.quota}, ${
      this.#p.windowSeconds * 1000
    }`;
  }

  /** Counts one hit for `key` (one round trip). Throws DatabaseUnavailable when the database is down. */
  async hit(key: string): Promise<Decision> {
    const known = this.blocked(key);
    if (known) return known;
    const [row] = await this.#db.query((sql) =>
      sql.unsafe<{ allowed: boolean; remaining: number; reset_ms: number }[]>(
        `select * from internal.rate_limit_hit(${this.hitArguments(key)})`,
      )
    );
    return this.settle(key, row);
  }

  /** Records the database's answer to a hit on `key` (counters, blocked cache, purge schedule). */
  settle(key: string, row: { allowed: boolean; remaining: number; reset_ms: number }): Decision {
    const now = this.#now();
    const decision = { allowed: row.allowed, remaining: row.remaining, resetMs: row.reset_ms };
    this.#purgeIfDue();
    if (decision.allowed) {
      this.counters.allowed++;
    } else {
      this.counters.limited++;
      if (this.#blocked.size >= BLOCKED_CACHE_MAX) {
        this.#blocked.delete(this.#blocked.keys().next().value!);
      }
      this.#blocked.set(key, now + decision.resetMs);
    }
    return decision;
  }

  /** Sets the RateLimit fields of `decision` on the response; throws 429 when it is a denial. */
  apply(c: Context, decision: Decision): void {
    c.header("ratelimit-policy", this.policyHeader, { append: true });
    c.header("ratelimit", this.header(decision), { append: true });
    if (!decision.allowed) throw new TooManyRequests(decision.resetMs);
  }

  /** The `RateLimit` field for a decision. */
  header(d: Decision): string {
    return `"${this.#p.policy}";r=${d.remaining};t=${Math.ceil(d.resetMs / 1000)}`;
  }
}

export interface RateLimitOptions extends RateLimitPolicy {
  db: Database;
  /** The key to count under; `undefined` skips this policy for the request. */
  key: (c: Context) => string | undefined | Promise<string | undefined>;
  now?: () => number;
}

/** What `internal.rate_limit_hit` answers. */
export interface HitRow {
  allowed: boolean;
  remaining: number;
  reset_ms: number;
}

/** A hit left for the route's next statement to count (`deferRateLimit`). */
export class DeferredHit {
  #counted = false;

  constructor(
    readonly limiter: RateLimiter,
    readonly key: string,
    readonly c: Context,
  ) {}

  /** Whether it was counted (by a statement, or on its own). */
  get counted(): boolean {
    return this.#counted;
  }

  /** The arguments of `internal.rate_limit_hit(…)` for this hit, as SQL literals. */
  sqlArguments(): string {
    return this.limiter.hitArguments(this.key);
  }

  /**
   * Takes the database's answer: RateLimit fields on the response, counters. Throws 429 when the
   * key is over quota (the statement must then have done nothing else).
   */
  settle(row: HitRow): void {
    this.#counted = true;
    this.limiter.apply(this.c, this.limiter.settle(this.key, row));
  }

  /** Counts it on its own (one round trip), when no statement of the route is left to carry it. */
  async countAlone(): Promise<void> {
    if (this.#counted) return;
    this.#counted = true;
    this.limiter.apply(this.c, await this.limiter.hit(this.key));
  }
}

/** The variable `deferRateLimit()` sets. */
export interface RateLimitVariables {
  rateLimitHit?: DeferredHit;
}

/**
 * The middleware: counts the hit (one statement), sets the RateLimit fields on every response,
 * and answers `429 RATE_LIMITED` when the key is over quota.
 */
export function rateLimit(opts: RateLimitOptions): MiddlewareHandler {
  const limiter = new RateLimiter(opts.db, opts, opts.now);
  return async function rateLimitGuard(c, next) {
    const key = await opts.key(c);
    if (key === undefined) return next();
    limiter.apply(c, await limiter.hit(key));
    await next();
  };
}

/**
 * The same limit, counted in the route's next statement instead of one of its own (one round
 * trip for both): it stands where a rate limit stands in the guard order and refuses at once a
 * key already known to be blocked, but leaves a DeferredHit in `c.var.rateLimitHit`, which
 * `idempotency()` counts with its claim (and market-data's QuoteService with its cache read). A
 * request that fails before it is counted (bad input) is counted on its own afterwards, and
 * answered 429 if over quota, so every request counts and carries the fields.
 */
export function deferRateLimit(opts: RateLimitOptions): MiddlewareHandler {
  const limiter = new RateLimiter(opts.db, opts, opts.now);
  return async function deferredRateLimit(c, next) {
    const key = await opts.key(c);
    if (key === undefined) return next();
    const known = limiter.blocked(key);
    if (known) return limiter.apply(c, known);
    const pending = new DeferredHit(limiter, key, c);
    c.set("rateLimitHit" satisfies keyof RateLimitVariables, pending);
    await next();
    if (pending.counted) return;
    if (!c.error) {
      // The route let a request through without counting it: a wiring bug, loud at once.
      throw new Error("deferRateLimit() needs a statement that counts the hit");
    }
    // Failed before it was counted (bad input): counted now, and 429 when over quota.
    await pending.countAlone();
  };
}
