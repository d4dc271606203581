/**
 * The one way this code waits: `delay(ms, { signal })`, as Deno std's `async/delay` (which is on
 * JSR, out of reach here). Resolves after `ms`; rejects with the signal's reason as soon as it
 * aborts, clearing its timer, so no wait outlives what it waits for.
 *
 * @example
 * ```ts
 * import { delay } from "./delay.ts";
 *
 * await delay(10);
 * const stop = new AbortController();
 * const waiting = delay(60_000, { signal: stop.signal });
 * stop.abort(new Error("no longer needed"));
 * await waiting.catch(() => {}); // rejected at once, its timer cleared
 * ```
 */

/** Options of {@linkcode delay}. */
export interface DelayOptions {
  /** Ends the wait early: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** Resolves after `ms` milliseconds; rejects with `signal.reason` when `signal` aborts first. */
export function delay(ms: number, options: DelayOptions = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}
