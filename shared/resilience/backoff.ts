/**
 * Full-jitter exponential backoff: how long to wait before the next attempt, the one backoff every
 * retry, probe and re-queue in the suite uses.
 *
 * Full jitter ("sleep = random_between(0, min(cap, base · 2^attempt))", AWS Architecture Blog,
 * "Exponential Backoff And Jitter", 2015) spreads callers that failed together over the whole
 * window, so they do not come back in step; of the schemes compared there it does the least work
 * in total. Written here because it is one line: a library would add a dependency, not safety.
 *
 * @example
 * ```ts
 * import { fullJitter } from "./backoff.ts";
 *
 * // Third attempt (attempt 2), base 10 ms, cap 500 ms: a delay in [0, 40) ms.
 * const delayMs: number = fullJitter(2, 10, 500);
 * ```
 *
 * @module
 */

/**
 * A uniform delay in [0, min(capMs, baseMs · 2^attempt)), in whole milliseconds.
 *
 * @param attempt How many attempts have failed before this wait, from 0 (the first wait).
 * @param baseMs The window of the first wait; each later one doubles it.
 * @param capMs The largest window, however many attempts failed.
 * @param random A source of numbers in [0, 1), injected for tests; `Math.random` by default.
 * @throws {RangeError} When `attempt` is negative or not an integer, or `baseMs` or `capMs` is
 * negative or not finite.
 *
 * @example
 * ```ts
 * import { fullJitter } from "./backoff.ts";
 *
 * fullJitter(3, 10, 1000, () => 0.5); // 40: half of the 80 ms window
 * ```
 */
export function fullJitter(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  if (!(Number.isInteger(attempt) && attempt >= 0)) {
    throw new RangeError(`Backoff attempt must be a non-negative integer, got ${attempt}`);
  }
  if (!(Number.isFinite(baseMs) && baseMs >= 0 && Number.isFinite(capMs) && capMs >= 0)) {
    throw new RangeError(
      `Backoff base and cap must be finite and >= 0, got ${baseMs} and ${capMs}`,
    );
  }
  // Past 2^31 the window is the cap anyway; the exponent is bounded so it never reaches Infinity.
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 31)));
}
