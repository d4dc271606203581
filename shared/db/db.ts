/**
 * The database: a bounded postgres.js pool (works through Supabase's transaction pooler: no
 * prepared statements, no session state) behind admission control, per-call deadlines,
 * transient-error retries and a per-instance recovery gate.
 *
 * Each policy lives in its own module and is composed here: `_db_errors.ts` says which failures
 * are which, `../resilience/retry.ts` re-runs transient ones, `_semaphore.ts` admits one call
 * per connection, `_recovery_gate.ts` fails fast through an outage and probes until the database
 * is back, and `_driver_guard.ts` survives postgres.js's stray signals when a pool is recycled.
 * The `_` modules are this folder's internals, not the suite's API.
 *
 * postgres.js is imported by the first probe, not at boot: it loads Node's `net`, `tls`, `fs` and
 * `stream` compatibility modules, which cost a cold isolate more than everything else it boots.
 * A function therefore answers what needs no database (preflights, `401`s, `404`s) without
 * them, and a call made before any probe has decided runs or joins the first one and waits for
 * it (never a guessed `503`).
 *
 * @example
 * ```ts
 * import { Database } from "./db.ts";
 * import { databaseSettings } from "../platform/platform.ts";
 * import { parseLimits } from "../limits.ts";
 *
 * const db = new Database({
 *   url: "postgres://postgres@127.0.0.1:5432/postgres",
 *   ...databaseSettings(parseLimits({})),
 * });
 * await db.start();
 * const id = await db.transaction(async (tx) =>
 *   (await tx`insert into t default values returning id`)[0].id
 * );
 * await db.close();
 * ```
 *
 * @module
 */
import type postgres from "postgres";
import { classifyDbError, isTransientDbError } from "./_db_errors.ts";
import { DatabaseBusy, SchemaOutdated } from "../errors.ts";
import { type GateState, RecoveryGate } from "./_recovery_gate.ts";
import { retry, type RetryPolicy } from "../resilience/retry.ts";
import { Semaphore } from "./_semaphore.ts";

export { classifyDbError, type DbErrorKind } from "./_db_errors.ts";
export { guardDriverBugs, isDriverSignal } from "./_driver_guard.ts";
export type { GateState, GateStatus } from "./_recovery_gate.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

/** postgres.js, imported once per process by the first probe that needs it. */
let driver: Promise<typeof postgres> | undefined;
const loadDriver = () => driver ??= import("postgres").then((m) => m.default);

/** A deadline timer later than this was held up by a blocked event loop, not by the database. */
const LOOP_LAG_MS = 50;

/** The database's sizes and times (the platform maps the limits registry onto them). */
export interface DatabaseSettings {
  /** Connections in the pool. */
  poolMax: number;
  connectTimeoutMs: number;
  /** A call's deadline once it holds a connection; past it the call counts as an outage. */
  queryTimeoutMs: number;
  idleTimeoutSeconds: number;
  /** Runs of a transaction that meets a transient conflict (the first included). */
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** The recovery gate's probe schedule (see `_recovery_gate.ts`). */
  probeBaseMs: number;
  probeMaxMs: number;
  schemaRecheckMs: number;
  /** `onConnect`'s deadline (migrations). */
  migrateTimeoutMs: number;
  /** How long a call may wait for a free connection before it is shed. */
  queueTimeoutMs: number;
}

/** Options of {@linkcode Database}. */
export interface DatabaseOptions extends DatabaseSettings {
  /** postgres:// URL of the server (or of the embedded database's socket). */
  url: string;
  /**
   * One call at a time, on one connection (the embedded database: postgres.js pipelines queries
   * on a busy connection and PGlite's socket server can lose an answer when messages
   * interleave). The local server, which started it, says so. Default false.
   */
  serial?: boolean;
  /** Runs (under `migrateTimeoutMs`) until it succeeds once, before the gate first opens (migrations). */
  onConnect?: (sql: Sql) => Promise<void>;
  /**
   * The newest migration version the code needs, recorded in
   * `supabase_migrations.schema_migrations`; until it is there the gate stays in
   * `schema_outdated` (calls fail with SchemaOutdated) and re-checks every `DB_SCHEMA_RECHECK_MS`.
   */
  requiredVersion?: string;
  /** Told when the gate closes and when it reopens (operators' direct alerts). */
  onStateChange?: (state: GateState, cause?: unknown) => void;
  now?: () => number;
  random?: () => number;
}

/** What `health()` reports (the status function shows it as is). */
export interface DatabaseHealth {
  state: GateState;
  /** Connection failures seen since start. */
  failures: number;
  /** Transactions re-run after a transient error since start. */
  retries: number;
  /** Transactions that exhausted their attempts. */
  exhausted: number;
  /** Calls shed because no connection came free within `DB_QUEUE_TIMEOUT_MS`. */
  shed: number;
  /** Calls running and waiting for a connection now. */
  busy: number;
  waiting: number;
  /** Consecutive failed probes in the current outage. */
  probeFailures: number;
  /** When the next probe runs (ISO), while down or outdated. */
  nextProbeAt: string | null;
  lastError: string | null;
  /** The migration the schema lacks, while `schema_outdated`. */
  missingMigration: string | null;
}

/** Options of {@linkcode Database.transaction}. */
export interface TransactionOptions {
  isolation?: "read committed" | "repeatable read" | "serializable";
}

/** The pool, its admission control and deadlines, composed with the retry policy and the gate. */
export class Database {
  readonly #opts: DatabaseOptions;
  /** The pool: made by the first probe (see the module's summary). */
  #sql: Sql | undefined;
  #postgres: typeof postgres | undefined;
  readonly #gate: RecoveryGate;
  readonly #retry: RetryPolicy;
  #retries = 0;
  #exhausted = 0;
  #shed = 0;
  /** Whether `onConnect` has succeeded (it runs once, not after every outage). */
  #connected = false;
  /**
   * Admission: at most one call per pooled connection runs at once, so a call's deadline starts
   * when it holds a connection (waiting for one is load, not an outage, and has its own bound).
   */
  readonly #slots: Semaphore;

  constructor(opts: DatabaseOptions) {
    this.#opts = { ...opts };
    const l = this.#opts;
    this.#slots = new Semaphore(this.#poolSize());
    this.#gate = new RecoveryGate({
      probe: () => this.#probe(),
      probeBaseMs: l.probeBaseMs,
      probeMaxMs: l.probeMaxMs,
      schemaRecheckMs: l.schemaRecheckMs,
      requiredVersion: opts.requiredVersion,
      onConnectionFailure: () => this.#recycle(),
      onStateChange: opts.onStateChange,
      now: opts.now,
      random: opts.random,
    });
    this.#retry = retry({
      attempts: l.maxAttempts,
      handleWhen: isTransientDbError,
      backoff: { baseMs: l.retryBaseMs, capMs: l.retryMaxMs },
      random: opts.random,
      onRetry: () => this.#retries++,
    });
  }

  #poolSize(): number {
    return this.#opts.serial ? 1 : this.#opts.poolMax;
  }

  #createPool(): Sql {
    const l = this.#opts;
    return this.#postgres!(this.#opts.url, {
      max: this.#poolSize(),
      prepare: false,
      connect_timeout: l.connectTimeoutMs / 1000,
      idle_timeout: l.idleTimeoutSeconds,
      max_lifetime: 60 * 30,
      onnotice: () => {},
      // A lock wait ends as 55P03 (retried) well before the call's deadline trips the gate.
      connection: {
        application_name: "edge-functions",
        lock_timeout: Math.floor(l.queryTimeoutMs / 2),
      },
    });
  }

  /** Opens the gate: runs `onConnect` once; on failure schedules probes. Never throws. */
  start(): Promise<void> {
    return this.#gate.start();
  }

  /** Whether calls run one at a time (the embedded database). */
  get serial(): boolean {
    return this.#opts.serial === true;
  }

  /** Whether the gate is open. */
  get up(): boolean {
    return this.#gate.up;
  }

  /** Counters and the gate's state, for the status function and operators. */
  health(): DatabaseHealth {
    const s = this.#gate.status;
    return {
      state: s.state,
      failures: this.#gate.failures,
      retries: this.#retries,
      exhausted: this.#exhausted,
      shed: this.#shed,
      busy: this.#slots.busy,
      waiting: this.#slots.waiting,
      probeFailures: s.state === "down" ? s.probeFailures : 0,
      nextProbeAt: s.state !== "up" && s.nextProbeAt ? new Date(s.nextProbeAt).toISOString() : null,
      lastError: this.#gate.lastError,
      missingMigration: s.state === "schema_outdated" ? s.missing : null,
    };
  }

  /**
   * Runs `fn` in a transaction, re-running it whole on transient errors with full-jitter
   * backoff. Throws DatabaseUnavailable at once on a connection failure (and closes the gate),
   * DatabaseBusy after the last attempt, or whatever `fn` threw (the transaction rolled back).
   * `fn` may run more than once: keep side effects outside the database out of it.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    const begin = opts.isolation ? `isolation level ${opts.isolation}` : "";
    return this.#run((sql) => sql.begin(begin, (tx) => fn(tx)) as Promise<T>);
  }

  /**
   * Runs one statement as a transaction of its own in two round trips where `transaction()`
   * takes three: `begin; <statement>` as one Query message (the simple protocol), then `commit`.
   * A connection lost before the commit leaves nothing written. The same gate, retries and
   * classification as `transaction()`; the statement's values must be literals (sql_literal.ts).
   * Returns the statement's rows.
   */
  transactionOfOne<T>(statement: string): Promise<T[]> {
    return this.#run(async (sql) => {
      const conn = await sql.reserve();
      try {
        const results = await conn.unsafe(`begin; ${statement}`).simple();
        const rows = (results as unknown as T[][])[1];
        await conn.unsafe("commit").simple();
        return rows;
      } catch (err) {
        await conn.unsafe("rollback").catch(
          () => {/* the connection is gone: so is the transaction */},
        );
        throw err;
      } finally {
        conn.release();
      }
    });
  }

  /** Runs autocommit statements (one round trip each) with the same gate, retries and classification. */
  query<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    return this.#run(fn);
  }

  async #run<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    try {
      return await this.#retry.execute(() => this.#attempt(work));
    } catch (err) {
      if (!isTransientDbError(err)) throw err;
      // A transient error out of the policy means every attempt was used.
      this.#exhausted++;
      const attempts = this.#opts.maxAttempts;
      throw new DatabaseBusy(`still conflicting after ${attempts} attempts`, err);
    }
  }

  /** One attempt: through the gate and admission, under the deadline, failures classified. */
  async #attempt<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    if (this.#gate.deciding) await this.#gate.start();
    this.#gate.assertUp();
    try {
      return await this.#admitted(() => this.#withDeadline(work(this.#sql!)));
    } catch (err) {
      const kind = classifyDbError(err);
      if (kind === "connection") throw this.#gate.trip(err);
      if (kind === "schema") {
        // One request's answer; the gate stays as it is (a re-check would only loop).
        throw new SchemaOutdated(this.#opts.requiredVersion ?? "unknown", 5_000, err);
      }
      throw err;
    }
  }

  /** Round-trip latency in ms; throws DatabaseUnavailable when the gate is closed or it fails. */
  async ping(): Promise<number> {
    if (this.#gate.deciding) await this.#gate.start();
    this.#gate.assertUp();
    const started = performance.now();
    try {
      await this.#admitted(() => this.#withDeadline(this.#sql!`select 1`));
    } catch (err) {
      if (classifyDbError(err) === "connection") throw this.#gate.trip(err);
      throw err;
    }
    return Math.round((performance.now() - started) * 100) / 100;
  }

  /** The pool, for code that must manage its own connection (tests, migrations); after `start()`. */
  get sql(): Sql {
    if (!this.#sql) throw new Error("The pool opens with the first probe: await start() first.");
    return this.#sql;
  }

  /** Stops probing and ends the pool. */
  async close(): Promise<void> {
    await this.#gate.close();
    await this.#sql?.end({ timeout: 1 });
  }

  /** Runs `fn` holding a slot; waiting longer than `queueTimeoutMs` sheds the call. */
  async #admitted<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.#slots.acquire(this.#opts.queueTimeoutMs);
    if (!release) {
      this.#shed++;
      throw new DatabaseBusy("no connection came free in time");
    }
    if (!this.#gate.up) {
      release(); // the gate closed while this call waited
      this.#gate.assertUp();
    }
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Bounds a database call in time: a stalled connection counts as a connection failure. A timer
   * that fires late means the event loop itself was blocked (a synchronous load, a GC pause), not
   * the database: the answer may be waiting in the socket, so it gets one more turn of the loop.
   */
  async #withDeadline<T>(work: Promise<T>, ms = this.#opts.queryTimeoutMs): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      const fail = () =>
        reject(
          Object.assign(new Error("Database call passed its deadline"), { code: "QUERY_DEADLINE" }),
        );
      const due = performance.now() + ms;
      timer = setTimeout(() => {
        const lateBy = performance.now() - due;
        if (lateBy > LOOP_LAG_MS) timer = setTimeout(fail, LOOP_LAG_MS);
        else fail();
      }, ms);
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
      work.catch(() => {}); // the losing side of the race must not surface as unhandled
    }
  }

  /** A new pool; the old one's connections are destroyed (their calls fail as connection errors). */
  #recycle(): void {
    const old = this.#sql;
    if (!old) return;
    this.#sql = this.#createPool();
    old.end({ timeout: 0 }).catch(() => {});
  }

  /**
   * The gate's probe: a round trip, `onConnect` until it has succeeded once, then the required
   * migration. Throws what failed.
   */
  async #probe(): Promise<void> {
    if (!this.#sql) {
      this.#postgres = await loadDriver();
      this.#sql = this.#createPool();
    }
    await this.#withDeadline(this.#sql`select 1`);
    if (this.#opts.onConnect && !this.#connected) {
      const limit = this.#opts.migrateTimeoutMs;
      await this.#withDeadline(this.#opts.onConnect(this.#sql), limit);
    }
    this.#connected = true;
    const required = this.#opts.requiredVersion;
    if (required && !(await this.#withDeadline(hasMigration(this.#sql, required)))) {
      throw new SchemaOutdated(required, 0);
    }
  }
}

/** Whether `supabase_migrations.schema_migrations` records `version` (no table: no). */
async function hasMigration(sql: Sql, version: string): Promise<boolean> {
  try {
    const [row] = await sql`select exists (select 1 from supabase_migrations.schema_migrations
      where version = ${version}) as ok`;
    return row.ok === true;
  } catch (err) {
    if (classifyDbError(err) === "schema") return false;
    throw err;
  }
}
