/**
 * The database's recovery gate: fails calls fast while the database is unreachable (or lacks a
 * migration the code needs) and reopens after the first good probe.
 *
 * Its state is one tagged union, as cockatiel's circuit breaker holds its own: each state carries
 * exactly the facts that mean something in it (an outage's start and failed probes, the missing
 * migration, when the next probe runs), so no combination of loose fields can disagree. Written
 * here rather than taken from opossum or cockatiel: it must run exactly one probe at a time on a
 * jittered, growing schedule, tell an outage from a schema that is merely behind, expose its next
 * probe time (a 503's Retry-After), and run a due probe from the next call when its timer did not
 * fire (a deployed isolate does not keep timers alive between requests); no generic breaker does.
 *
 * @example
 * ```ts
 * import { RecoveryGate } from "./_recovery_gate.ts";
 *
 * const gate = new RecoveryGate({
 *   probe: async () => {}, // e.g. `select 1`, then check the required migration
 *   probeBaseMs: 100,
 *   probeMaxMs: 2_000,
 *   schemaRecheckMs: 5_000,
 *   onStateChange: (state) => console.warn(`database ${state}`),
 * });
 * await gate.start();
 * gate.assertUp(); // throws DatabaseUnavailable or SchemaOutdated while the gate is closed
 * await gate.close();
 * ```
 *
 * @module
 */
import { fullJitter } from "../resilience/backoff.ts";
import { classifyDbError, describeDbError } from "./_db_errors.ts";
import { DatabaseUnavailable, SchemaOutdated } from "../errors.ts";

/** Open; closed by an outage; or connected but missing a migration (not an outage). */
export type GateState = "up" | "down" | "schema_outdated";

/** The gate's whole state: one of three shapes, each with only the facts that hold in it. */
export type GateStatus =
  | { readonly state: "up" }
  | {
    readonly state: "down";
    /** When the gate closed (or, before it first opened, when it was made). */
    readonly since: number;
    /** Consecutive failed probes in this outage. */
    readonly probeFailures: number;
    /** When the next probe is due (ms since the epoch); 0 before the first one. */
    readonly nextProbeAt: number;
    /** Whether `onStateChange` was told the gate closed: false only before it first opened. */
    readonly reported: boolean;
  }
  | {
    readonly state: "schema_outdated";
    /** The migration version the schema lacks. */
    readonly missing: string;
    /** When the next re-check is due (ms since the epoch). */
    readonly nextProbeAt: number;
  };

/** Options of {@linkcode RecoveryGate}. */
export interface RecoveryGateOptions {
  /**
   * Checks the database: resolves when it may serve, throws otherwise. A connection failure (see
   * `classifyDbError`) keeps the gate down; any other error (a migration that fails, a
   * `SchemaOutdated` naming the missing version) makes it `schema_outdated`.
   */
  probe: () => Promise<void>;
  /** The first probe delay's cap after a failure (full jitter, doubling from here). */
  probeBaseMs: number;
  /** The longest wait between probes in an outage. */
  probeMaxMs: number;
  /** How often a schema that lacks the required migration is checked again. */
  schemaRecheckMs: number;
  /** The migration reported missing when a probe fails with something other than SchemaOutdated. */
  requiredVersion?: string;
  /** Told of every connection failure, a trip or a failed probe (the pool recycles its connections). */
  onConnectionFailure?: (err: unknown) => void;
  /** Told when the gate closes, reopens after having closed, or finds the schema behind. */
  onStateChange?: (state: GateState, cause?: unknown) => void;
  /** The clock in ms; `Date.now` by default. */
  now?: () => number;
  /** A source of numbers in [0, 1) for the jitter; `Math.random` by default. */
  random?: () => number;
}

/** The shortest wait before a probe, so a run of failures never becomes a busy loop. */
const MIN_PROBE_DELAY_MS = 25;

/**
 * The gate. It starts `down` (not yet reported); {@linkcode RecoveryGate.start} runs the first
 * probe. Probes run one at a time: on a timer, and from {@linkcode RecoveryGate.assertUp} once
 * due.
 */
export class RecoveryGate {
  readonly #o: RecoveryGateOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  #s: GateStatus;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #probing: Promise<void> | undefined;
  #closed = false;
  #failures = 0;
  #lastError: string | null = null;

  constructor(options: RecoveryGateOptions) {
    this.#o = { ...options };
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#s = {
      state: "down",
      since: this.#now(),
      probeFailures: 0,
      nextProbeAt: 0,
      reported: false,
    };
  }

  /** The current state (a snapshot: the gate replaces it, never changes it in place). */
  get status(): GateStatus {
    return this.#s;
  }

  /** Whether calls may run. */
  get up(): boolean {
    return this.#s.state === "up";
  }

  /**
   * Whether no probe has finished yet (none may have started): a call should run or join the
   * first one (`start()`) and wait for it rather than be told the database is down.
   */
  get deciding(): boolean {
    const s = this.#s;
    return s.state === "down" && !s.reported && s.probeFailures === 0 && !this.#closed;
  }

  /** Connection failures seen since start (trips and failed probes). */
  get failures(): number {
    return this.#failures;
  }

  /** The code or class of the last failure seen, if any. */
  get lastError(): string | null {
    return this.#lastError;
  }

  /** How long until the next probe (0 when up or already due): a 503's Retry-After. */
  retryAfterMs(): number {
    return this.#s.state === "up" ? 0 : Math.max(0, this.#s.nextProbeAt - this.#now());
  }

  /** Runs the first probe (or joins the one running). Never throws. */
  start(): Promise<void> {
    return this.#probe();
  }

  /**
   * Returns when the gate is open. Otherwise throws, after starting a probe if one is due and none
   * is running (its timer may not have fired in a deployed isolate).
   *
   * @throws {SchemaOutdated} While the schema lacks the required migration.
   * @throws {DatabaseUnavailable} While the database is unreachable.
   */
  assertUp(): void {
    const s = this.#s;
    if (s.state === "up") return;
    const wait = s.nextProbeAt - this.#now();
    if (wait <= 0 && !this.#probing && !this.#closed) void this.#probe();
    if (s.state === "schema_outdated") throw new SchemaOutdated(s.missing, Math.max(0, wait));
    throw new DatabaseUnavailable(Math.max(0, wait));
  }

  /**
   * Records a connection failure seen by a call. An open gate closes (once per outage): the pool
   * is told to recycle, the first probe is scheduled and `onStateChange("down")` is told. Returns
   * the error to throw to the caller.
   */
  trip(cause: unknown): DatabaseUnavailable {
    this.#failures++;
    this.#lastError = describeDbError(cause);
    if (this.#s.state === "up") {
      const since = this.#now();
      this.#o.onConnectionFailure?.(cause);
      this.#s = {
        state: "down",
        since,
        probeFailures: 0,
        nextProbeAt: this.#arm(this.#probeDelay(0)),
        reported: true,
      };
      this.#o.onStateChange?.("down", cause);
    }
    return new DatabaseUnavailable(this.retryAfterMs(), cause);
  }

  /** Stops probing: clears the timer and waits for a running probe. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#probing?.catch(() => {});
  }

  /**
   * One probe at a time; the first success reopens the gate. A connection failure keeps it down
   * with a growing full-jitter delay; anything else the database says is `schema_outdated`,
   * re-checked at a steady interval.
   */
  #probe(): Promise<void> {
    if (this.#probing) return this.#probing;
    if (this.#s.state === "up") return Promise.resolve();
    this.#probing = (async () => {
      try {
        await this.#o.probe();
        if (this.#closed) return;
        const was = this.#s;
        this.#s = { state: "up" };
        clearTimeout(this.#timer);
        const closedBefore = was.state === "schema_outdated" ||
          (was.state === "down" && was.reported);
        if (closedBefore) this.#o.onStateChange?.("up");
      } catch (err) {
        this.#failed(err);
      } finally {
        this.#probing = undefined;
      }
    })();
    return this.#probing;
  }

  #failed(err: unknown): void {
    this.#lastError = describeDbError(err);
    const was = this.#s;
    if (classifyDbError(err) === "connection") {
      this.#failures++;
      const probeFailures = (was.state === "down" ? was.probeFailures : 0) + 1;
      this.#o.onConnectionFailure?.(err);
      this.#s = {
        state: "down",
        since: was.state === "down" ? was.since : this.#now(),
        probeFailures,
        nextProbeAt: this.#arm(this.#probeDelay(probeFailures)),
        // Operators told the schema was behind are told when it serves again.
        reported: was.state === "down" ? was.reported : true,
      };
      return;
    }
    const missing = err instanceof SchemaOutdated
      ? err.missing
      : was.state === "schema_outdated"
      ? was.missing
      : this.#o.requiredVersion ?? "unknown";
    // Waiting for `db push`: a steady, jittered re-check (no outage to back off from).
    const recheck = this.#o.schemaRecheckMs;
    const delay = Math.round(recheck * (0.5 + this.#random() / 2));
    this.#s = { state: "schema_outdated", missing, nextProbeAt: this.#arm(delay) };
    if (was.state !== "schema_outdated") this.#o.onStateChange?.("schema_outdated", err);
  }

  /** The wait before the next probe after `failures` failed ones: full jitter, growing. */
  #probeDelay(failures: number): number {
    return Math.max(
      MIN_PROBE_DELAY_MS,
      fullJitter(failures, this.#o.probeBaseMs, this.#o.probeMaxMs, this.#random),
    );
  }

  /** Sets the probe timer (unless closed) and returns when it is due. */
  #arm(delayMs: number): number {
    clearTimeout(this.#timer);
    if (!this.#closed) {
      this.#timer = setTimeout(() => void this.#probe(), delayMs);
      // The timer must not keep a process alive (tests, the local server's shutdown).
      Deno.unrefTimer(this.#timer as unknown as number);
    }
    return this.#now() + delayMs;
  }
}
