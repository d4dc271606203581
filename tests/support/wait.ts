/**
 * Bounded waits for tests that assert an outcome, never a speed: a watchdog that fails a test
 * whose work hung (instead of letting `deno test` hang with it), with a bound far above any
 * healthy run so that a loaded machine never fails it.
 */

/** `work`'s value, or a failure naming `what` if it has not settled after `ms` (it hung). */
export async function settledWithin<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still unsettled after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, hung]);
  } finally {
    clearTimeout(timer);
    work.catch(() => {}); // a rejection after the watchdog fired is already reported
  }
}
