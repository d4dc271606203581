/**
 * The per-process platform the functions share: configuration limits, the database with its
 * recovery gate, the breakers, the logger and background work. Production code only: the local
 * server injects what is local (the embedded database's URL, migrations on connect).
 *
 * @example
 * ```ts
 * import { bootFunction } from "./app.ts";
 * import { createPlatform } from "./platform.ts";
 * import statusFunction from "../../functions/status/index.ts";
 *
 * const platform = await createPlatform(Deno.env.toObject());
 * const fn = await bootFunction(statusFunction, platform);
 * const res = await fn.fetch(new Request("http://localhost/status"));
 * await platform.close();
 * ```
 */
import type { Platform } from "./app.ts";
import { Breakers } from "../resilience/circuit_breaker.ts";
import { Database, guardDriverBugs, type Sql } from "../db/db.ts";
import { postgresUrl } from "../env.ts";
import { parseLimits } from "../limits.ts";
import { createLogger, type Logger } from "../logger.ts";
import { operatorAlerts } from "../alerts/operator_alerts.ts";
import { SCHEMA_VERSION } from "../db/schema_version.ts";

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
  const direct = operatorAlerts({
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
    breakers: new Breakers(limits),
    rateLimits: new Map(),
    background,
    alertOperators: direct?.alert ??
      ((kind, title, message) => log.error("operator alert", { kind, title, message })),
    db: undefined as unknown as Database,
    async close() {
      await Promise.allSettled([...pending]);
      platform.breakers.shutdown();
      await platform.db.close();
    },
  };
  platform.db = new Database({
    url,
    limits,
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
