/**
 * Retry: re-runs a function after errors the caller calls transient, waiting a full-jitter
 * exponential backoff between attempts, up to a fixed number of attempts.
 *
 * As in cockatiel (`retry(handleWhen(pred), { maxAttempts, backoff })`), *which* errors are worth
 * another attempt is the caller's predicate and *how* to retry is this policy: a database retries
 * on SQLSTATE 40001, an HTTP client on a 503, both with the same schedule. Written here rather
 * than taken from cockatiel because the suite needs only this one policy and its few lines; the
 * library's event emitters and policy wrappers would be the larger part of the code.
 *
 * @example
 * ```ts
 * import { retry } from "./retry.ts";
 *
 * const policy = retry({
 *   attempts: 3,
 *   handleWhen: (err) => (err as { code?: string }).code === "40001",
 *   backoff: { baseMs: 10, capMs: 500 },
 * });
 * const answer: number = await policy.execute(async (attempt) => attempt + 1);
 * ```
 *
 * @module
 */
import { delay } from "./delay.ts";
import { fullJitter } from "./backoff.ts";

/** Options of {@linkcode retry}. */
export interface RetryOptions {
  /** How many attempts in all, the first one included (at least 1). */
  attempts: number;
  /** Which errors are worth another attempt; any other error is thrown at once. */
  handleWhen: (err: unknown) => boolean;
  /** The full-jitter backoff between attempts (see {@linkcode fullJitter}). */
  backoff: { baseMs: number; capMs: number };
  /** A source of numbers in [0, 1) for the jitter; `Math.random` by default. */
  random?: () => number;
  /** Waits `ms`; a timer by default (tests inject one that records the delays). */
  sleep?: (ms: number) => Promise<void>;
  /** Told of each handled error before the wait that follows it: the attempt (from 0) and the wait. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** A retry policy: {@linkcode RetryPolicy.execute} runs a function under it. */
export interface RetryPolicy {
  /**
   * Runs `fn` (given the attempt number, from 0) until it resolves, throws an error the policy
   * does not handle, or has used every attempt. Rejects with `fn`'s last error in the latter two
   * cases, so a caller that sees a handled error knows the attempts ran out.
   */
  execute<T>(fn: (attempt: number) => Promise<T>): Promise<T>;
}

/**
 * Builds a retry policy; its options are checked and copied once.
 *
 * @throws {RangeError} When `attempts` is not a positive integer or the backoff is not finite
 * and non-negative.
 */
export function retry(options: RetryOptions): RetryPolicy {
  const opts = { ...options, backoff: { ...options.backoff } };
  if (!(Number.isInteger(opts.attempts) && opts.attempts >= 1)) {
    throw new RangeError(`Retry attempts must be a positive integer, got ${opts.attempts}`);
  }
  const { baseMs, capMs } = opts.backoff;
  if (!(Number.isFinite(baseMs) && baseMs >= 0 && Number.isFinite(capMs) && capMs >= 0)) {
    throw new RangeError(`Retry backoff must be finite and >= 0, got ${baseMs} and ${capMs}`);
  }
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? delay;
  return {
    async execute<T>(fn: (attempt: number) => Promise<T>): Promise<T> {
      for (let attempt = 0;; attempt++) {
        try {
          return await fn(attempt);
        } catch (err) {
          if (attempt + 1 >= opts.attempts || !opts.handleWhen(err)) throw err;
          const delayMs = fullJitter(attempt, baseMs, capMs, random);
          opts.onRetry?.(err, attempt, delayMs);
          await sleep(delayMs);
        }
      }
    },
  };
}
