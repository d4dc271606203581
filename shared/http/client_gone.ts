/**
 * "The client went away", as a signal that means only that. Deno.serve's `request.signal` also
 * aborts after every successful response (its legacy behaviour, which it warns about and will
 * drop), so code that listened to it directly would read a delivered answer as a vanished client.
 * This follows the request's signal only while the handler runs and lets go when it returns, so
 * the signal aborts only for a client that left before its answer was ready.
 *
 * @example
 * ```ts
 * import { whileClientWaits } from "./client_gone.ts";
 *
 * declare const req: Request;
 * const result = await whileClientWaits(req, (signal) =>
 *   fetch("https://upstream.example", { signal }).then((r) => r.text())
 * );
 * ```
 */

/** Runs `work` with a signal that aborts if the client goes away while it runs. */
export async function whileClientWaits<T>(
  req: Request,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const gone = new AbortController();
  const leave = () => gone.abort(req.signal.reason);
  if (req.signal.aborted) leave();
  else req.signal.addEventListener("abort", leave, { once: true });
  try {
    return await work(gone.signal);
  } finally {
    req.signal.removeEventListener("abort", leave);
  }
}
