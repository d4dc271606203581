/**
 * "Resolve once n messages arrived" for the simulators that record messages (Discord, the
 * Slack-style fallback webhook): tests wait on it instead of sleeping.
 *
 * @example
 * ```ts
 * import { messageWaiters } from "./message_waiters.ts";
 *
 * const messages: string[] = [];
 * const waiters = messageWaiters("Example simulator", () => messages.length);
 * const arrived = waiters.waitFor(1, 1_000);
 * messages.push("hello");
 * waiters.arrived();
 * await arrived;
 * ```
 */
export interface MessageWaiters {
  /** Resolves once `count()` reaches `n`; rejects naming the simulator after `timeoutMs`. */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  /** Call after recording a message. */
  arrived(): void;
}

export function messageWaiters(name: string, count: () => number): MessageWaiters {
  const waiters = new Set<() => void>();
  return {
    waitFor(n, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (count() < n) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${name} got ${count()} of ${n} messages`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    arrived() {
      for (const check of [...waiters]) check();
    },
  };
}
