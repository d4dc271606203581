/**
 * Housekeeping (purges of expired rows), the one way every purge of the suite runs: at most every
 * N milliseconds, driven by the calls that arrive rather than by a timer, never twice at once,
 * as background work that logs what it removed and never fails the request that started it.
 * Every interval and batch size is a named limit (shared/limits.ts).
 *
 * Request-driven because a deployed Edge Function's isolate is not kept alive for its timers
 * between requests: a `setInterval` purge may simply never run there, while every request is a
 * chance to check whether one is due. Deno std's `debounce`/`throttle` would run on timers and
 * cannot say whether the previous run has finished, hence these few lines.
 *
 * @example
 * ```ts
 * import { housekeeping } from "./housekeeping.ts";
 * import { createLogger } from "../logger.ts";
 *
 * const purgeIfDue = housekeeping({
 *   name: "expired keys",
 *   intervalMs: 60_000,
 *   run: async () => 0, // e.g. delete a batch of expired keys; resolves to how many
 *   log: createLogger(),
 * });
 * purgeIfDue(); // on each request: starts a purge when one is due, otherwise does nothing
 * ```
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import type { Logger } from "../logger.ts";

/** Options of {@linkcode everyAtMost}. */
export interface EveryAtMostOptions {
  /** The clock, in ms; `Date.now` by default. */
  now?: () => number;
  /** A source of numbers in [0, 1) for `firstAtRandom`; `Math.random` by default. */
  random?: () => number;
  /**
   * Whether the first run falls at a random point of the first interval (counted from now)
   * instead of on the first call. Instances are short-lived and start together (a deploy, a
   * burst): spread this way, their runs happen regularly but not all at once. `false` by default.
   */
  firstAtRandom?: boolean;
}

/**
 * Returns a function that starts `fn` when it is due and returns its promise, and otherwise
 * returns `undefined`: on the first call (or, with `firstAtRandom`, once a random part of the
 * first interval has passed), then no sooner than `intervalMs` after the previous run started,
 * and never while a previous run is still going. The interval counts from a run's start, so a
 * slow run does not push the next one later. A run that throws or rejects rejects the returned
 * promise (the caller logs it) and does not stop later runs.
 *
 * @throws {RangeError} When `intervalMs` is not a positive finite number.
 *
 * @example
 * ```ts
 * import { everyAtMost } from "./housekeeping.ts";
 *
 * let t = 0;
 * let runs = 0;
 * const tick = everyAtMost(1000, () => void runs++, { now: () => t });
 * await tick(); // runs: 1
 * t = 500;
 * tick(); // undefined: not due yet
 * t = 1000;
 * await tick(); // runs: 2
 * ```
 */
export function everyAtMost(
  intervalMs: number,
  fn: () => unknown,
  options: EveryAtMostOptions = {},
): () => Promise<void> | undefined {
  if (!(Number.isFinite(intervalMs) && intervalMs > 0)) {
    throw new RangeError(`Schedule interval must be a positive number of ms, got ${intervalMs}`);
  }
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  let due = options.firstAtRandom ? now() + random() * intervalMs : Number.NEGATIVE_INFINITY;
  let running = false;
  return function runIfDue(): Promise<void> | undefined {
    const at = now();
    if (running || at < due) return undefined;
    due = at + intervalMs;
    running = true;
    return (async () => {
      try {
        await fn();
      } finally {
        running = false;
      }
    })();
  };
}

/** Options of {@linkcode housekeeping}. */
export interface HousekeepingOptions extends EveryAtMostOptions {
  /** What is purged, for the log ("stripe event ids"). */
  name: string;
  intervalMs: number;
  /** One run; resolves to how many rows it removed. */
  run: () => Promise<number>;
  log: Pick<Logger, "info" | "warn">;
  /**
   * Keeps a run alive past the request that started it (the platform's `background`, which is
   * `EdgeRuntime.waitUntil` deployed); without it the run simply goes on in this process.
   */
  background?: (work: Promise<unknown>) => void;
}

/**
 * A purge on the {@linkcode everyAtMost} schedule, run as background work: call the returned
 * function on each request. A run's count is logged when it removed anything, and its failure is
 * logged as a warning (the next due call tries again); neither reaches the caller.
 *
 * @throws {RangeError} When `intervalMs` is not a positive finite number.
 */
export function housekeeping(opts: HousekeepingOptions): () => void {
  const { name, log } = opts;
  const runIfDue = everyAtMost(opts.intervalMs, async () => {
    const purged = await opts.run();
    if (purged > 0) log.info("housekeeping purged rows", { purge: name, purged });
  }, opts);
  return function purgeIfDue(): void {
    const run = runIfDue()?.catch((err) =>
      log.warn("housekeeping failed", { purge: name, error: err })
    );
    if (run) opts.background?.(run);
  };
}

/**
 * Offers a purge its chance after each request of the route it stands on: how a scheduled job's
 * route (the drain, the sync, the catch-up, which pg_cron calls every few minutes) carries its
 * function's purges, so they run on the schedule deployed even while nobody else calls.
 */
export function purgeAfter(purgeIfDue: () => void): MiddlewareHandler {
  return async function purgeAfter(_c, next) {
    await next();
    purgeIfDue();
  };
}
