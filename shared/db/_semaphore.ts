/**
 * A counting semaphore with a FIFO queue and a bounded wait: the database's admission control
 * (one call per pooled connection, so a call's deadline starts when it holds one).
 *
 * Written here because the wait must be bounded (a caller that waited too long is shed, not
 * queued forever) and the queue length must be visible for health reports; the small semaphore
 * packages on npm offer one or the other.
 *
 * @example
 * ```ts
 * import { Semaphore } from "./_semaphore.ts";
 *
 * const slots = new Semaphore(2);
 * const release = await slots.acquire(1_000);
 * if (release) {
 *   try {
 *     // ... use one of the two slots ...
 *   } finally {
 *     release();
 *   }
 * } // else: no slot came free within a second
 * ```
 *
 * @module
 */

/** A counting semaphore of `size` slots, granted first come, first served. */
export class Semaphore {
  readonly #size: number;
  #free: number;
  readonly #queue: { grant: (release: () => void) => void }[] = [];

  /** @throws {RangeError} When `size` is not a positive integer. */
  constructor(size: number) {
    if (!(Number.isInteger(size) && size >= 1)) {
      throw new RangeError(`Semaphore size must be a positive integer, got ${size}`);
    }
    this.#size = size;
    this.#free = size;
  }

  /** Slots held now. */
  get busy(): number {
    return this.#size - this.#free;
  }

  /** Callers waiting for a slot now. */
  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * Resolves with the function that gives the slot back (calling it again does nothing) once a
   * slot is free, or with `null` when none came free within `timeoutMs`.
   */
  acquire(timeoutMs: number): Promise<(() => void) | null> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve) => {
      const entry = {
        grant: (release: () => void) => {
          clearTimeout(timer);
          resolve(release);
        },
      };
      const timer = setTimeout(() => {
        this.#queue.splice(this.#queue.indexOf(entry), 1);
        resolve(null);
      }, timeoutMs);
      this.#queue.push(entry);
    });
  }

  /** A slot handed to the next waiter on release (it never goes free in between), else freed. */
  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) next.grant(this.#releaser());
      else this.#free++;
    };
  }
}
