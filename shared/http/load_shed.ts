/**
 * Load shedding: at most `maxInFlight` requests run in one function instance at once; past that
 * the request is answered `503 OVERLOADED` with `Retry-After` at once, before it costs anything.
 * Without it, requests beyond the CPU's capacity queue in the HTTP layer and every caller waits
 * (seen in the soak benchmark: 20 s latencies at 4× broker-order's capacity). Per instance by
 * design: it protects this process; limits that must hold across instances live in Postgres.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { loadShed } from "./load_shed.ts";
 *
 * const app = new Hono();
 * app.use(loadShed({ maxInFlight: 128 }));
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import { ServiceUnavailable } from "../errors.ts";

export interface LoadShedOptions {
  maxInFlight: number;
  /** Told when a request is shed (for counters). */
  onShed?: () => void;
}

export function loadShed(opts: LoadShedOptions): MiddlewareHandler {
  if (!(Number.isInteger(opts.maxInFlight) && opts.maxInFlight > 0)) {
    throw new Error(`maxInFlight must be a positive integer, got ${opts.maxInFlight}`);
  }
  const { maxInFlight, onShed } = opts;
  let inFlight = 0;
  return async function shedLoad(c, next) {
    if (inFlight >= maxInFlight) {
      onShed?.();
      throw new ServiceUnavailable(
        "OVERLOADED",
        "This instance is at capacity; nothing was done.",
        1000,
      );
    }
    inFlight++;
    let counted = true;
    pauses.set(c, async (work) => {
      if (!counted) return await work();
      inFlight--;
      counted = false;
      try {
        return await work();
      } finally {
        inFlight++;
        counted = true;
      }
    });
    try {
      await next();
    } finally {
      inFlight--;
    }
  };
}

/**
 * Runs `work` (waiting for a request's body) without it counting as work in flight: a slow
 * sender holds its own socket, never the instance's capacity. Outside `loadShed`, just runs it.
 */
export function uncounted<T>(c: Context, work: () => Promise<T>): Promise<T> {
  const pause = pauses.get(c);
  return pause ? pause(work) as Promise<T> : work();
}

const pauses = new WeakMap<Context, (work: () => Promise<unknown>) => Promise<unknown>>();
