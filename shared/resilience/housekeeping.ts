/**
 * "At most every N milliseconds": runs housekeeping (purges, sweeps) when it is due, driven by
 * the calls that arrive rather than by a timer, and never twice at once.
 *
 * Request-driven because a deployed Edge Function's isolate is not kept alive for its timers
 * between requests: a `setInterval` purge may simply never run there, while every request is a
 * chance to check whether one is due. Deno std's `debounce`/`throttle` would run on timers and
 * cannot say whether the previous run has finished, hence these few lines.
 *
 * @example
 * ```ts
 * import { everyAtMost } from "./housekeeping.ts";
 *
 * const purge = async () => {}; // e.g. delete expired keys
 * const maybePurge = everyAtMost(60_000, purge, { firstAtRandom: true });
 * // On each request: starts a purge when one is due, otherwise does nothing.
 * maybePurge()?.catch((err) => console.warn("purge failed", err));
 * ```
 *
 * @module
 */

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
