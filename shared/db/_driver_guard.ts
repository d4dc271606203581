/**
 * Keeps the process alive through two known postgres.js 3.4.9 bugs, and only those.
 *
 * After a committed `sql.begin()` its `connection.onclose = reject` stays set, so ending the pool
 * (as the recovery gate does) rejects an already-settled promise with CONNECTION_DESTROYED/CLOSED
 * (porsager/postgres#1201); and `nextWrite()` can throw on a socket already closed
 * (porsager/postgres#1133, #1208). Both are stray signals about connections the gate has already
 * given up on; every caller's own promise was settled with the real outcome. Anything else still
 * surfaces as usual.
 *
 * @example
 * ```ts
 * import { guardDriverBugs } from "./_driver_guard.ts";
 *
 * const stop = guardDriverBugs((err) => console.warn("stray postgres.js signal swallowed", err));
 * // ... serve ...
 * stop();
 * ```
 *
 * @module
 */

const listeners = new Set<(err: unknown) => void>();
let installed = false;

/**
 * Installs the process-wide `unhandledrejection` and `error` listeners (once per process: the
 * events are global) and tells `onSwallowed` of each stray signal swallowed until the returned
 * function is called.
 */
export function guardDriverBugs(onSwallowed: (err: unknown) => void = () => {}): () => void {
  listeners.add(onSwallowed);
  if (!installed) {
    installed = true;
    const swallow = (event: Event, err: unknown) => {
      if (!isDriverSignal(err)) return;
      event.preventDefault();
      for (const listener of listeners) listener(err);
    };
    globalThis.addEventListener("unhandledrejection", (e) => swallow(e, e.reason));
    globalThis.addEventListener("error", (e) => swallow(e, e.error));
  }
  return () => listeners.delete(onSwallowed);
}

/**
 * Whether `err` is one of those stray postgres.js connection signals: raised from the driver's
 * own connection code, and either a CONNECTION_DESTROYED/CLOSED/ENDED or `nextWrite`'s TypeError.
 */
export function isDriverSignal(err: unknown): boolean {
  const e = err as { code?: unknown; stack?: unknown } | undefined;
  const stack = typeof e?.stack === "string" ? e.stack : "";
  if (!/postgres\S*\/src\/(connection|index)\.js/.test(stack)) return false;
  return (typeof e?.code === "string" && /^CONNECTION_(DESTROYED|CLOSED|ENDED)$/.test(e.code)) ||
    (err instanceof TypeError && /nextWrite/.test(stack));
}
