/**
 * The per-process platform the functions share: configuration limits, the database with its
 * recovery gate, the breakers, the logger and background work. Production code only: the local
 * server injects what is local (migrations on connect, the embedded database's one connection).
 *
 * The limits registry (shared/limits.ts) is read here and mapped onto each part's own options
 * (the database, its recovery gate, the breakers), so those parts never depend on it.
 *
 * @example
 * ```ts
 * import { bootFunction } from "./boot.ts";
 * import { createPlatform } from "./platform.ts";
 * import statusFunction from "../../functions/status/index.ts";
 *
 * const platform = await createPlatform(Deno.env.toObject());
 * const fn = await bootFunction(statusFunction, platform);
 * const res = await fn.fetch(new Request("http://localhost/status"));
 * await platform.close();
 * ```
 */
import { Breakers, type BreakerSettings } from "../resilience/circuit_breaker.ts";
import { Database, type DatabaseSettings, guardDriverBugs, type Sql } from "../db/db.ts";
import { postgresUrl } from "../env.ts";
import { type Limits, parseLimits } from "../limits.ts";
import { createLogger, type Logger } from "../logger.ts";
import type { RateLimitPurge, RateLimitStats } from "../http/rate_limit.ts";
import { BodyBudget } from "../http/body_deadline.ts";
import { SCHEMA_VERSION } from "../db/schema_version.ts";

/** What every function may use: one per process, shared by the functions it serves. */
export interface Platform {
  /** The raw environment (process env merged with env files). */
  env: Record<string, string | undefined>;
  limits: Limits;
  db: Database;
  log: Logger;
  breakers: Breakers;
  fetch: typeof fetch;
  now: () => number;
  /** Keeps background work (alert delivery) alive past the response, as EdgeRuntime.waitUntil. */
  background: (work: Promise<unknown>) => void;
  /** This instance's rate-limit counters by policy (for `status`); pass as `stats` to rateLimit. */
  rateLimits: RateLimitStats;
  /** Tells operators directly (not through the database), e.g. that the database is down. */
  alertOperators: (kind: string, title: string, message: string) => void;
  /** The bytes of request bodies this instance may hold at once (BODY_BUFFER_BUDGET_BYTES). */
  bodyBudget: BodyBudget;
}

/** Where the platform tells operators what it noticed; how it reaches them is the sink's own. */
export interface AlertSink {
  alert(kind: string, title: string, message: string): void;
  /** The database is reachable again (a sink that records in it may catch up). */
  databaseUp(): void;
}

/** What an alert sink is built from: the platform's parts, the database as a getter. */
export interface AlertSinkDeps {
  env: Record<string, string | undefined>;
  limits: Limits;
  log: Logger;
  fetch?: typeof fetch;
  now?: () => number;
  db: () => Database | undefined;
  background: (work: Promise<unknown>) => void;
}

/** The database's own options, from the limits registry. */
export function databaseSettings(l: Limits): DatabaseSettings {
  return {
    poolMax: l.DB_POOL_MAX,
    connectTimeoutMs: l.DB_CONNECT_TIMEOUT_MS,
    queryTimeoutMs: l.DB_QUERY_TIMEOUT_MS,
    idleTimeoutSeconds: l.DB_IDLE_TIMEOUT_SECONDS,
    maxAttempts: l.DB_MAX_ATTEMPTS,
    retryBaseMs: l.DB_RETRY_BASE_MS,
    retryMaxMs: l.DB_RETRY_MAX_MS,
    probeBaseMs: l.DB_PROBE_BASE_MS,
    probeMaxMs: l.DB_PROBE_MAX_MS,
    migrateTimeoutMs: l.DB_MIGRATE_TIMEOUT_MS,
    queueTimeoutMs: l.DB_QUEUE_TIMEOUT_MS,
    schemaRecheckMs: l.DB_SCHEMA_RECHECK_MS,
  };
}

/** How rate limiters purge idle keys, from the limits registry and the platform. */
export function rateLimitPurge(p: Pick<Platform, "limits" | "log" | "background">): RateLimitPurge {
  return {
    intervalSeconds: p.limits.RATE_LIMIT_PURGE_INTERVAL_SECONDS,
    batchSize: p.limits.RATE_LIMIT_PURGE_BATCH_SIZE,
    log: p.log,
    background: p.background,
  };
}

/** The breakers' own options, from the limits registry. */
export function breakerSettings(l: Limits): BreakerSettings {
  return {
    errorPercent: l.BREAKER_ERROR_PERCENT,
    volumeThreshold: l.BREAKER_VOLUME_THRESHOLD,
    windowMs: l.BREAKER_WINDOW_MS,
    resetMs: l.BREAKER_RESET_MS,
  };
}

export interface PlatformOptions {
  /**
   * Runs once on the first good connection, before the gate first opens: the local server
   * applies its migrations here. Deployed functions have none (they run no DDL).
   */
  onConnect?: (sql: Sql) => Promise<void>;
  log?: Logger;
  fetch?: typeof fetch;
  now?: () => number;
  /**
   * Whether to run the database's first probe now and resolve after it (default true). A deployed
   * function passes false: it serves at once, and the first call that needs the database runs
   * that probe and waits for it (nothing that needs no database waits for one).
   */
  waitForDatabase?: boolean;
  /**
   * The database serves one connection at a time (the embedded database: PGlite's socket server
   * can lose an answer when messages interleave). The local server knows; default false.
   */
  serialDatabase?: boolean;
  /**
   * How operators are told directly (the entry points pass alerts/operator_alerts.ts's
   * `operatorAlerts`); without one, or when it builds none, alerts are only logged.
   */
  alertSink?: (deps: AlertSinkDeps) => AlertSink | undefined;
}

export interface RunningPlatform extends Platform {
  /** Waits for background work, closes breakers, the pool and the embedded database. */
  close(): Promise<void>;
}

/** Builds the platform; throws ConfigError on a malformed limit or database URL. */
export async function createPlatform(
  env: Record<string, string | undefined>,
  opts: PlatformOptions = {},
): Promise<RunningPlatform> {
  const limits = parseLimits(env);
  const log = opts.log ?? createLogger();
  guardDriverBugs((err) => log.warn("stray postgres.js connection signal ignored", { error: err }));
  // A malformed URL is reported by each function's own schema (they then answer BOOT_ERROR).
  const configured = postgresUrl.safeParse(env.SUPABASE_DB_URL).success;
  // Without a database the gate simply never opens: nothing is faked, every call answers 503.
  const url = configured
    ? env.SUPABASE_DB_URL!
    : "postgres://unconfigured@127.0.0.1:1/unconfigured";

  const pending = new Set<Promise<unknown>>();
  // Deployed, the Edge Runtime keeps an isolate alive for work handed to EdgeRuntime.waitUntil
  // (and for nothing else after the response); locally the set is awaited on close.
  const waitUntil = edgeRuntime()?.waitUntil;
  const background = (work: Promise<unknown>) => {
    const tracked = work.catch((err) => log.error("background work failed", { error: err }))
      .finally(() => pending.delete(tracked));
    pending.add(tracked);
    waitUntil?.(tracked);
  };
  // Straight to Discord when DISCORD_WEBHOOK_URL is set (the queue needs the database).
  const direct = opts.alertSink?.({
    env,
    limits,
    log,
    fetch: opts.fetch,
    now: opts.now,
    db: () => platform.db,
    background,
  });
  const platform: RunningPlatform = {
    env,
    limits,
    log,
    fetch: opts.fetch ?? fetch,
    now: opts.now ?? Date.now,
    breakers: new Breakers(breakerSettings(limits)),
    rateLimits: new Map(),
    bodyBudget: new BodyBudget(limits.BODY_BUFFER_BUDGET_BYTES),
    background,
    alertOperators: direct
      ? (kind, title, message) => direct.alert(kind, title, message)
      : (kind, title, message) => log.error("operator alert", { kind, title, message }),
    db: undefined as unknown as Database,
    async close() {
      await Promise.allSettled([...pending]);
      platform.breakers.shutdown();
      await platform.db.close();
    },
  };
  platform.db = new Database({
    url,
    ...databaseSettings(limits),
    serial: opts.serialDatabase,
    now: platform.now,
    onConnect: opts.onConnect,
    requiredVersion: SCHEMA_VERSION,
    onStateChange: (state, cause) => {
      if (state === "schema_outdated") {
        log.error("database schema is outdated; answering 503 SCHEMA_OUTDATED until it arrives", {
          missingMigration: platform.db.health().missingMigration,
          error: cause,
        });
      } else if (state === "down") {
        log.error("database unavailable; failing fast until a probe succeeds", { error: cause });
        platform.alertOperators(
          "database",
          "Database unavailable",
          "The instance entered fail-safe: requests answer 503 until the database returns.",
        );
      } else {
        log.info("database available again");
        direct?.databaseUp();
      }
    },
  });
  platform.breakers.onChange = (name, state) => {
    log.warn("circuit breaker changed", { breaker: name, state });
    if (state === "open") {
      platform.alertOperators(
        `breaker:${name}`,
        `Circuit open: ${name}`,
        `Calls to the ${name} are paused after repeated failures.`,
      );
    }
  };
  if (configured && (opts.waitForDatabase ?? true)) await platform.db.start();
  return platform;
}

/** Supabase's Edge Runtime global, when running in it. */
function edgeRuntime(): { waitUntil(p: Promise<unknown>): void } | undefined {
  const rt = (globalThis as { EdgeRuntime?: { waitUntil?: (p: Promise<unknown>) => void } })
    .EdgeRuntime;
  return typeof rt?.waitUntil === "function"
    ? { waitUntil: (p) => rt.waitUntil!.call(rt, p) }
    : undefined;
}
