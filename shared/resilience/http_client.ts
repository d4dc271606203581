/**
 * Outbound HTTP with a deadline that really aborts the upstream call: one AbortSignal, combining
 * the caller's (the incoming request's) and the deadline, flows into `fetch`; the timer is
 * cleared in `finally`. Failures come back typed: `UpstreamTimeout` when the deadline passed
 * (the outcome of a non-idempotent call is then unknown), `UpstreamUnreachable` when the
 * connection failed.
 *
 * @example
 * ```ts
 * import { fetchWithDeadline } from "./http_client.ts";
 *
 * // Throws UpstreamTimeout past 10 s, UpstreamUnreachable when the connection fails.
 * const res = await fetchWithDeadline(
 *   "https://broker.example.com/v2/orders",
 *   { method: "POST", body: JSON.stringify({ symbol: "AAPL", qty: "1" }) },
 *   { timeoutMs: 10_000, upstream: "broker" },
 * );
 * ```
 */

export interface DeadlineOptions {
  timeoutMs: number;
  /** Names the upstream in errors. */
  upstream: string;
  /** The caller's signal (e.g. the incoming request's). */
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** The deadline passed before the upstream answered. */
export class UpstreamTimeout extends Error {
  constructor(readonly upstream: string, readonly timeoutMs: number) {
    super(`The ${upstream} did not answer within ${timeoutMs} ms`);
    this.name = "UpstreamTimeout";
  }
}

/** The connection to the upstream failed (refused, reset, DNS). */
export class UpstreamUnreachable extends Error {
  constructor(readonly upstream: string, cause: unknown) {
    super(`The ${upstream} could not be reached`, { cause });
    this.name = "UpstreamUnreachable";
  }
}

/** `fetch` bounded by `timeoutMs`; the body is read inside the deadline by `readBody`. */
export async function fetchWithDeadline<T = Response>(
  input: string | URL,
  init: RequestInit,
  opts: DeadlineOptions,
  readBody: (res: Response) => Promise<T> = (res) => Promise.resolve(res as T),
): Promise<T> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline.signal]) : deadline.signal;
  try {
    const res = await (opts.fetch ?? fetch)(input, { ...init, signal });
    return await readBody(res);
  } catch (err) {
    if (deadline.signal.aborted) throw new UpstreamTimeout(opts.upstream, opts.timeoutMs);
    if (opts.signal?.aborted) throw err;
    if (err instanceof TypeError || (err as Error)?.name === "ConnectionRefused") {
      throw new UpstreamUnreachable(opts.upstream, err);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
