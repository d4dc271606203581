/**
 * Circuit breakers on opossum: one per upstream per instance, their state readable by `status`.
 * An open breaker answers at once with `CircuitOpen` (`503` with `Retry-After`); after
 * `resetMs` one probe call goes through and closes it again on success. A breaker sheds load;
 * correctness never depends on it.
 *
 * @example
 * ```ts
 * import { Breakers } from "./circuit_breaker.ts";
 *
 * const breakers = new Breakers({ errorPercent: 50, volumeThreshold: 5, windowMs: 10_000, resetMs: 5_000 });
 * // Throws CircuitOpen without calling while the market-data provider keeps failing.
 * const res = await breakers.get("market-data").run(() =>
 *   fetch("https://data.example.com/v2/stocks/quotes?symbols=AAPL")
 * );
 * ```
 */
import type CircuitBreaker from "opossum";
import { CircuitOpen } from "../errors.ts";

type Opossum = CircuitBreaker<[() => Promise<unknown>], unknown>;

/**
 * opossum, imported by the first call through any breaker, not at boot. Its browser build
 * (`dist/opossum.js`, the same code with its own EventEmitter) rather than its CommonJS entry,
 * which requires `node:events`: a bundle that requires anything from Node loads Node's
 * compatibility layer when it starts, the largest part of a cold isolate's boot.
 */
let opossum: Promise<typeof CircuitBreaker> | undefined;
const loadOpossum = () =>
  opossum ??= import("opossum/dist/opossum.js").then((m) =>
    (m.default ?? m) as unknown as typeof CircuitBreaker
  );

export interface BreakerOptions {
  errorPercent: number;
  volumeThreshold: number;
  windowMs: number;
  resetMs: number;
  /** Errors that say nothing about the upstream's health (e.g. a 4xx rejection) and must not count. */
  isHealthy?: (err: unknown) => boolean;
  now?: () => number;
}

/** What every breaker of an instance shares (the platform maps the limits registry onto it). */
export type BreakerSettings = Pick<
  BreakerOptions,
  "errorPercent" | "volumeThreshold" | "windowMs" | "resetMs"
>;

export interface BreakerState {
  name: string;
  state: "closed" | "open" | "half_open";
  failures: number;
  successes: number;
  rejects: number;
  retryAfterMs: number;
}

/** One upstream's breaker (opossum's, made by its first call: until then it is closed and idle). */
export class Breaker {
  readonly name: string;
  readonly #opts: BreakerOptions;
  #cb: Opossum | undefined;
  readonly #resetMs: number;
  readonly #now: () => number;
  #openedAt = 0;
  /** Told when the breaker opens or closes. */
  onChange?: (name: string, state: "open" | "closed") => void;

  constructor(name: string, opts: BreakerOptions) {
    this.name = name;
    this.#opts = opts;
    this.#resetMs = opts.resetMs;
    this.#now = opts.now ?? Date.now;
  }

  async #breaker(): Promise<Opossum> {
    if (this.#cb) return this.#cb;
    const Opossum = await loadOpossum();
    if (this.#cb) return this.#cb; // another first call made it meanwhile
    const { name } = this;
    const opts = this.#opts;
    const cb: Opossum = new Opossum((fn: () => Promise<unknown>) => fn(), {
      timeout: false, // deadlines live in the call itself (fetchWithDeadline) so they really abort
      errorThresholdPercentage: opts.errorPercent,
      volumeThreshold: opts.volumeThreshold,
      rollingCountTimeout: opts.windowMs,
      resetTimeout: opts.resetMs,
      errorFilter: (err: unknown) => opts.isHealthy?.(err) ?? false,
      name,
    });
    cb.on("open", () => {
      this.#openedAt = this.#now();
      this.onChange?.(name, "open");
    });
    cb.on("close", () => this.onChange?.(name, "closed"));
    return this.#cb = cb;
  }

  /** Runs `fn` through the breaker; throws CircuitOpen when it is open. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      const cb = this.#cb ?? await this.#breaker();
      return await cb.fire(fn) as T;
    } catch (err) {
      if ((err as { code?: string })?.code === "EOPENBREAKER") {
        throw new CircuitOpen(this.name, this.retryAfterMs());
      }
      throw err;
    }
  }

  retryAfterMs(): number {
    if (!this.#cb?.opened) return 0;
    return Math.max(1000, this.#openedAt + this.#resetMs - this.#now());
  }

  state(): BreakerState {
    const cb = this.#cb;
    const s = cb?.stats;
    return {
      name: this.name,
      state: cb?.opened ? "open" : cb?.halfOpen ? "half_open" : "closed",
      failures: s?.failures ?? 0,
      successes: s?.successes ?? 0,
      rejects: s?.rejects ?? 0,
      retryAfterMs: this.retryAfterMs(),
    };
  }

  shutdown(): void {
    this.#cb?.shutdown();
  }
}

/** The instance's breakers, created on first use and listed for `status`. */
export class Breakers {
  readonly #opts: BreakerOptions;
  readonly #all = new Map<string, Breaker>();
  onChange?: (name: string, state: "open" | "closed") => void;

  constructor(settings: BreakerSettings) {
    this.#opts = { ...settings };
  }

  /** The breaker named `name`; `opts` apply only when it is created. */
  get(name: string, opts: Partial<BreakerOptions> = {}): Breaker {
    let breaker = this.#all.get(name);
    if (!breaker) {
      breaker = new Breaker(name, { ...this.#opts, ...opts });
      breaker.onChange = (n, s) => this.onChange?.(n, s);
      this.#all.set(name, breaker);
    }
    return breaker;
  }

  states(): BreakerState[] {
    return [...this.#all.values()].map((b) => b.state());
  }

  shutdown(): void {
    for (const b of this.#all.values()) b.shutdown();
    this.#all.clear();
  }
}
