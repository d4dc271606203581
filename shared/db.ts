/**
 * The database: a bounded postgres.js pool (works through Supabase's transaction pooler: no
 * prepared statements, no session state), transient-error retries, and a per-instance recovery
 * gate that fails fast while the database is unreachable and reopens after the first good probe.
 *
 * The gate is written here rather than taken from opossum: it must recycle the pool, run exactly
 * one probe at a time on a jittered, growing schedule and expose its next probe time, none of
 * which a generic breaker does.
 *
 * @example
 * const db = new Database({ url, limits });
 * const id = await db.transaction(async (tx) => (await tx`insert into t default values returning id`)[0].id);
 */
import postgres from "postgres";
import { DatabaseBusy, DatabaseUnavailable, SchemaOutdated } from "./errors.ts";
import type { Limits } from "./limits.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

/** SQLSTATEs worth re-running the whole transaction for. */
const TRANSIENT = new Set(["40P01", "40001", "53300", "55P03"]);
/** postgres.js and socket error codes that mean the connection itself failed. */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "QUERY_DEADLINE",
]);

/**
 * Keeps the process alive through two known postgres.js 3.4.9 bugs, and only those: after a
 * committed `sql.begin()` its `connection.onclose = reject` stays set, so ending the pool (as the
 * recovery gate does) rejects an already-settled promise with CONNECTION_DESTROYED/CLOSED
 * (porsager/postgres#1201); and `nextWrite()` can throw on a socket already closed
 * (porsager/postgres#1133, #1208). Both are stray signals about connections the gate has already
 * given up on; every caller's own promise was settled with the real outcome. Anything else still
 * surfaces as usual. The listeners are installed once per process; each caller is told of what was
 * swallowed until it calls the returned function.
 */
export function guardDriverBugs(onSwallowed: (err: unknown) => void = () => {}): () => void {
  driverListeners.add(onSwallowed);
  if (!driverGuardInstalled) {
    driverGuardInstalled = true;
    const swallow = (event: Event, err: unknown) => {
      if (!isDriverSignal(err)) return;
      event.preventDefault();
      for (const listener of driverListeners) listener(err);
    };
    globalThis.addEventListener("unhandledrejection", (e) => swallow(e, e.reason));
    globalThis.addEventListener("error", (e) => swallow(e, e.error));
  }
  return () => driverListeners.delete(onSwallowed);
}
const driverListeners = new Set<(err: unknown) => void>();
let driverGuardInstalled = false;

/** Whether `err` is one of those stray postgres.js connection signals (see guardDriverBugs). */
export function isDriverSignal(err: unknown): boolean {
  const e = err as { code?: unknown; stack?: unknown } | undefined;
  const stack = typeof e?.stack === "string" ? e.stack : "";
  if (!/postgres\S*\/src\/(connection|index)\.js/.test(stack)) return false;
  return (typeof e?.code === "string" && /^CONNECTION_(DESTROYED|CLOSED|ENDED)$/.test(e.code)) ||
    (err instanceof TypeError && /nextWrite/.test(stack));
}

/** A deadline timer later than this was held up by a blocked event loop, not by the database. */
const LOOP_LAG_MS = 50;

export type DbErrorKind = "transient" | "connection" | "schema" | "other";

/** SQLSTATEs that mean the schema lacks what the code expects (a migration not yet applied). */
const SCHEMA = new Set(["42P01", "42883", "3F000"]);

/**
 * Which failures are which: SQLSTATE classes first, then socket and driver codes. A missing
 * table, function or schema is "schema", never "connection": it is not an outage.
 */
export function classifyDbError(err: unknown): DbErrorKind {
  const e = err as { code?: unknown; errno?: unknown; name?: unknown; message?: unknown };
  const code = typeof e?.code === "string" ? e.code : "";
  if (TRANSIENT.has(code)) return "transient";
  if (SCHEMA.has(code)) return "schema";
  if (/^(08|28)/.test(code) || code === "3D000" || /^57P0[1-5]$/.test(code)) return "connection";
  if (CONNECTION_CODES.has(code)) return "connection";
  if (err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.ConnectionReset) {
    return "connection";
  }
  if (typeof e?.message === "string" && /connection (refused|reset)|broken pipe/i.test(e.message)) {
    return "connection";
  }
  return "other";
}

export interface DatabaseOptions {
  /** postgres:// URL of the server (or of the embedded database's socket). */
  url: string;
  limits: Pick<
    Limits,
    | "DB_POOL_MAX"
    | "DB_CONNECT_TIMEOUT_MS"
    | "DB_QUERY_TIMEOUT_MS"
    | "DB_IDLE_TIMEOUT_SECONDS"
    | "DB_MAX_ATTEMPTS"
    | "DB_RETRY_BASE_MS"
    | "DB_RETRY_MAX_MS"
    | "DB_PROBE_BASE_MS"
    | "DB_PROBE_MAX_MS"
    | "DB_MIGRATE_TIMEOUT_MS"
    | "DB_QUEUE_TIMEOUT_MS"
    | "DB_SCHEMA_RECHECK_MS"
  >;
  /** Runs (under `DB_MIGRATE_TIMEOUT_MS`) until it succeeds once, before the gate first opens (migrations). */
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
  /** Pool size override (the embedded database serves one connection). */
  max?: number;
}

/** Open; closed by an outage; or connected but missing a migration (not an outage). */
export type GateState = "up" | "down" | "schema_outdated";

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

export interface TransactionOptions {
  isolation?: "read committed" | "repeatable read" | "serializable";
}

/** Full-jitter exponential backoff: a uniform delay in [0, min(cap, base·2^attempt)). */
export function fullJitter(attempt: number, baseMs: number, capMs: number, random = Math.random) {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

export class Database {
  readonly #opts: DatabaseOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  #sql: Sql;
  #state: GateState = "down";
  #nextProbeAt = 0;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  #probing: Promise<void> | undefined;
  #closed = false;
  #failures = 0;
  #retries = 0;
  #exhausted = 0;
  #shed = 0;
  #probeFailures = 0;
  #lastError: string | null = null;
  #missing: string | null = null;
  /** Whether the gate has ever closed after being open (so a reopening is a recovery). */
  #tripped = false;
  #connected = false;
  /**
   * Admission: at most one call per pooled connection runs at once, so a call's deadline starts
   * when it holds a connection (waiting for one is load, not an outage, and has its own bound).
   * The embedded database gets one slot (found by the first probe, before the gate ever opens):
   * postgres.js pipelines queries on a busy connection and PGlite's socket server can lose an
   * answer when messages interleave.
   */
  #slots: Slots;
  #serial = false;

  constructor(opts: DatabaseOptions) {
    this.#opts = { ...opts };
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
    this.#slots = new Slots(this.#poolSize());
    this.#sql = this.#createPool();
  }

  #poolSize(): number {
    return this.#serial ? 1 : this.#opts.max ?? this.#opts.limits.DB_POOL_MAX;
  }

  #createPool(): Sql {
    const l = this.#opts.limits;
    return postgres(this.#opts.url, {
      max: this.#poolSize(),
      prepare: false,
      connect_timeout: l.DB_CONNECT_TIMEOUT_MS / 1000,
      idle_timeout: l.DB_IDLE_TIMEOUT_SECONDS,
      max_lifetime: 60 * 30,
      onnotice: () => {},
      // A lock wait ends as 55P03 (retried) well before the call's deadline trips the gate.
      connection: {
        application_name: "edge-functions",
        lock_timeout: Math.floor(l.DB_QUERY_TIMEOUT_MS / 2),
      },
    });
  }

  /** Opens the gate: runs `onConnect` once; on failure schedules probes. Never throws. */
  start(): Promise<void> {
    return this.#probe();
  }

  /** Whether calls run one at a time (the embedded database). */
  get serial(): boolean {
    return this.#serial;
  }

  /** Whether the gate is open. */
  get up(): boolean {
    return this.#state === "up";
  }

  health(): DatabaseHealth {
    return {
      state: this.#state,
      failures: this.#failures,
      retries: this.#retries,
      exhausted: this.#exhausted,
      shed: this.#shed,
      busy: this.#slots.busy,
      waiting: this.#slots.waiting,
      probeFailures: this.#probeFailures,
      nextProbeAt: this.#state !== "up" && this.#nextProbeAt
        ? new Date(this.#nextProbeAt).toISOString()
        : null,
      lastError: this.#lastError,
      missingMigration: this.#missing,
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

  /** Runs autocommit statements (one round trip each) with the same gate, retries and classification. */
  query<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    return this.#run(fn);
  }

  async #run<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    const l = this.#opts.limits;
    for (let attempt = 0;; attempt++) {
      this.#assertUp();
      try {
        return await this.#admitted(() => this.#withDeadline(work(this.#sql)));
      } catch (err) {
        const kind = classifyDbError(err);
        if (kind === "connection") throw this.#trip(err);
        if (kind === "schema") {
          // One request's answer; the gate stays as it is (a re-check would only loop).
          throw new SchemaOutdated(this.#opts.requiredVersion ?? "unknown", 5_000, err);
        }
        if (kind !== "transient") throw err;
        if (attempt + 1 >= l.DB_MAX_ATTEMPTS) {
          this.#exhausted++;
          throw new DatabaseBusy(`still conflicting after ${l.DB_MAX_ATTEMPTS} attempts`, err);
        }
        this.#retries++;
        await sleep(fullJitter(attempt, l.DB_RETRY_BASE_MS, l.DB_RETRY_MAX_MS, this.#random));
      }
    }
  }

  /** Round-trip latency in ms; throws DatabaseUnavailable when the gate is closed or it fails. */
  async ping(): Promise<number> {
    this.#assertUp();
    const started = performance.now();
    try {
      await this.#admitted(() => this.#withDeadline(this.#sql`select 1`));
    } catch (err) {
      if (classifyDbError(err) === "connection") throw this.#trip(err);
      throw err;
    }
    return Math.round((performance.now() - started) * 100) / 100;
  }

  /** The pool, for code that must manage its own connection (tests, migrations). */
  get sql(): Sql {
    return this.#sql;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#probeTimer);
    await this.#probing?.catch(() => {});
    await this.#sql.end({ timeout: 1 });
  }

  #assertUp(): void {
    if (this.#state === "up") return;
    const wait = this.#nextProbeAt - this.#now();
    // A deployed isolate may not keep timers alive between requests: a due probe runs now.
    if (wait <= 0 && !this.#probing && !this.#closed) void this.#probe();
    if (this.#state === "schema_outdated") {
      throw new SchemaOutdated(this.#missing ?? "unknown", Math.max(0, wait));
    }
    throw new DatabaseUnavailable(Math.max(0, wait));
  }

  /** Runs `fn` holding a slot; waiting longer than `DB_QUEUE_TIMEOUT_MS` sheds the call. */
  async #admitted<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.#slots.acquire(this.#opts.limits.DB_QUEUE_TIMEOUT_MS);
    if (!release) {
      this.#shed++;
      throw new DatabaseBusy("no connection came free in time");
    }
    if (this.#state !== "up") {
      release(); // the gate closed while this call waited
      this.#assertUp();
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
  async #withDeadline<T>(work: Promise<T>, ms = this.#opts.limits.DB_QUERY_TIMEOUT_MS): Promise<T> {
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

  /** Closes the gate (once per outage), recycles the pool and schedules the first probe. */
  #trip(cause: unknown): DatabaseUnavailable {
    this.#failures++;
    this.#lastError = describe(cause);
    if (this.#state === "up") {
      this.#state = "down";
      this.#tripped = true;
      this.#probeFailures = 0;
      this.#recycle();
      this.#schedule();
      this.#opts.onStateChange?.("down", cause);
    }
    return new DatabaseUnavailable(Math.max(0, this.#nextProbeAt - this.#now()), cause);
  }

  /** A new pool; the old one's connections are destroyed (their calls fail as connection errors). */
  #recycle(): void {
    const old = this.#sql;
    this.#sql = this.#createPool();
    old.end({ timeout: 0 }).catch(() => {});
  }

  #schedule(): void {
    if (this.#closed) return;
    const l = this.#opts.limits;
    const delay = this.#state === "schema_outdated"
      // Waiting for `db push`: a steady, jittered re-check (no outage to back off from).
      ? Math.round(l.DB_SCHEMA_RECHECK_MS * (0.5 + this.#random() / 2))
      : Math.max(
        25,
        fullJitter(this.#probeFailures, l.DB_PROBE_BASE_MS, l.DB_PROBE_MAX_MS, this.#random),
      );
    this.#nextProbeAt = this.#now() + delay;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = setTimeout(() => void this.#probe(), delay);
    Deno.unrefTimer(this.#probeTimer as unknown as number);
  }

  /**
   * One probe at a time; the first success reopens the gate. A connection failure keeps it
   * `down` (backing off); anything else the database says (a migration that fails, a schema
   * without the required version) is `schema_outdated`, re-checked at a steady interval.
   */
  #probe(): Promise<void> {
    if (this.#probing) return this.#probing;
    this.#probing = (async () => {
      const sql = this.#sql;
      try {
        const [{ version }] = await this.#withDeadline(sql`select version()`);
        if (!this.#serial && String(version).includes("PGlite")) {
          this.#serial = true;
          this.#slots = new Slots(1);
          this.#recycle();
        }
        if (this.#opts.onConnect && !this.#connected) {
          const limit = this.#opts.limits.DB_MIGRATE_TIMEOUT_MS;
          await this.#withDeadline(this.#opts.onConnect(this.#sql), limit);
        }
        this.#connected = true;
        const required = this.#opts.requiredVersion;
        if (required && !(await this.#withDeadline(hasMigration(this.#sql, required)))) {
          throw new SchemaOutdated(required, 0);
        }
        if (this.#closed) return;
        const wasOutdated = this.#state === "schema_outdated";
        this.#state = "up";
        this.#probeFailures = 0;
        this.#nextProbeAt = 0;
        this.#missing = null;
        if (this.#tripped || wasOutdated) this.#opts.onStateChange?.("up");
        this.#tripped = false;
      } catch (err) {
        this.#lastError = describe(err);
        if (classifyDbError(err) === "connection") {
          this.#failures++;
          this.#probeFailures++;
          if (this.#state === "schema_outdated") this.#state = "down";
          this.#recycle();
        } else if (this.#state !== "schema_outdated") {
          this.#state = "schema_outdated";
          this.#missing = err instanceof SchemaOutdated
            ? err.missing
            : this.#opts.requiredVersion ?? "unknown";
          this.#opts.onStateChange?.("schema_outdated", err);
        }
        this.#schedule();
      } finally {
        this.#probing = undefined;
      }
    })();
    return this.#probing;
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

function describe(err: unknown): string {
  const e = err as { code?: unknown };
  return typeof e?.code === "string" ? e.code : err instanceof Error ? err.name : "unknown";
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A counting semaphore with a FIFO queue and a bounded wait (`null` when the wait ran out). */
class Slots {
  readonly #size: number;
  #free: number;
  readonly #queue: { grant: (release: () => void) => void }[] = [];

  constructor(size: number) {
    this.#size = size;
    this.#free = size;
  }

  get busy(): number {
    return this.#size - this.#free;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  acquire(timeoutMs: number): Promise<(() => void) | null> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve) => {
      const entry = {
        grant: (release: () => void) => {
          clearTimeout(timer);
          resolve(release);
        },
      };
      const timer = setTimeout(() => {
        this.#queue.splice(this.#queue.indexOf(entry), 1);
        resolve(null);
      }, timeoutMs);
      this.#queue.push(entry);
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) next.grant(this.#releaser());
      else this.#free++;
    };
  }
}
