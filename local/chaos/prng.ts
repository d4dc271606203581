/**
 * The chaos run's only source of randomness: a seeded PRNG (mulberry32), so one seed replays the
 * same fault schedule and the same sequence of client choices. Nothing in the harness calls
 * `Math.random()`; every loop draws from its own stream, split off the seed by name, so adding
 * a load kind does not shift the fault schedule.
 *
 * @example
 * ```ts
 * import { Rng } from "./prng.ts";
 *
 * const rng = new Rng(42).fork("nemesis");
 * rng.int(1, 6); // the same number for seed 42, every time
 * ```
 */

/** mulberry32: 32 bits of state, good enough to draw schedules (not for secrets). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of a name, to derive a sub-stream's seed. */
function hash(text: string): number {
  let h = 2166136261;
  for (const ch of text) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

/** A seeded random stream with the draws the harness needs. */
export class Rng {
  readonly #next: () => number;
  constructor(readonly seed: number) {
    this.#next = mulberry32(seed);
  }
  /** An independent stream for `name` (same seed and name: same stream). */
  fork(name: string): Rng {
    return new Rng((this.seed ^ hash(name)) >>> 0);
  }
  /** A float in [0, 1). */
  next(): number {
    return this.#next();
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.#next() * (hi - lo + 1));
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.#next() < p;
  }
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#next() * items.length)];
  }
  /** One element, by weight (`[item, weight]` pairs with a positive total). */
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    const total = items.reduce((s, [, w]) => s + w, 0);
    let x = this.#next() * total;
    for (const [item, w] of items) {
      x -= w;
      if (x < 0) return item;
    }
    return items[items.length - 1][0];
  }
  /** A deterministic id of `length` lowercase letters and digits. */
  id(length = 12): string {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    let s = "";
    for (let i = 0; i < length; i++) s += alphabet[Math.floor(this.#next() * alphabet.length)];
    return s;
  }
}
