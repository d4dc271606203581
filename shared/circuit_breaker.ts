/**
 * Circuit breakers on opossum: one per upstream per instance, their state readable by `status`.
 * An open breaker answers at once with `CircuitOpen` (`503` with `Retry-After`); after
 * `resetMs` one probe call goes through and closes it again on success. A breaker sheds load;
 * correctness never depends on it.
 *
 * @example
 * ```ts
 * import { Breakers } from "./circuit_breaker.ts";
 * import { parseLimits } from "./limits.ts";
 *
 * const breakers = new Breakers(parseLimits({}));
 * // Throws CircuitOpen without calling while the market-data provider keeps failing.
 * const res = await breakers.get("market-data").run(() =>
 *   fetch("https://data.example.com/v2/stocks/quotes?symbols=AAPL")
 * );
 * ```
 */
import CircuitBreaker from "opossum";
import { CircuitOpen } from "./errors.ts";
import type { Limits } from "./limits.ts";

export interface BreakerOptions {
  errorPercent: number;
  volumeThreshold: number;
  windowMs: number;
  resetMs: number;
  /** Errors that say nothing about the upstream's health (e.g. a 4xx rejection) and must not count. */
  isHealthy?: (err: unknown) => boolean;
  now?: () => number;
}

export interface BreakerState {
  name: string;
  state: "closed" | "open" | "half_open";
  failures: number;
  successes: number;
  rejects: number;
  retryAfterMs: number;
}

/** One upstream's breaker. */
export class Breaker {
  readonly name: string;
  readonly #cb: CircuitBreaker<[() => Promise<unknown>], unknown>;
  readonly #resetMs: number;
  readonly #now: () => number;
  #openedAt = 0;
  /** Told when the breaker opens or closes. */
  onChange?: (name: string, state: "open" | "closed") => void;

  constructor(name: string, opts: BreakerOptions) {
    this.name = name;
    this.#resetMs = opts.resetMs;
    this.#now = opts.now ?? Date.now;
    this.#cb = new CircuitBreaker((fn: () => Promise<unknown>) => fn(), {
      timeout: false, // deadlines live in the call itself (fetchWithDeadline) so they really abort
      errorThresholdPercentage: opts.errorPercent,
      volumeThreshold: opts.volumeThreshold,
      rollingCountTimeout: opts.windowMs,
      resetTimeout: opts.resetMs,
      errorFilter: (err: unknown) => opts.isHealthy?.(err) ?? false,
      name,
    });
    this.#cb.on("open", () => {
      this.#openedAt = this.#now();
      this.onChange?.(name, "open");
    });
    this.#cb.on("close", () => this.onChange?.(name, "closed"));
  }

  /** Runs `fn` through the breaker; throws CircuitOpen when it is open. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await this.#cb.fire(fn) as T;
    } catch (err) {
      if ((err as { code?: string })?.code === "EOPENBREAKER") {
        throw new CircuitOpen(this.name, this.retryAfterMs());
      }
      throw err;
    }
  }

  retryAfterMs(): number {
    if (!this.#cb.opened) return 0;
    return Math.max(1000, this.#openedAt + this.#resetMs - this.#now());
  }

  state(): BreakerState {
    const s = this.#cb.stats;
    return {
      name: this.name,
      state: this.#cb.opened ? "open" : this.#cb.halfOpen ? "half_open" : "closed",
      failures: s.failures,
      successes: s.successes,
      rejects: s.rejects,
      retryAfterMs: this.retryAfterMs(),
    };
  }

  shutdown(): void {
    this.#cb.shutdown();
  }
}

/** The instance's breakers, created on first use and listed for `status`. */
export class Breakers {
  readonly #opts: BreakerOptions;
  readonly #all = new Map<string, Breaker>();
  onChange?: (name: string, state: "open" | "closed") => void;

  constructor(
    limits: Pick<
      Limits,
      | "BREAKER_ERROR_PERCENT"
      | "BREAKER_VOLUME_THRESHOLD"
      | "BREAKER_WINDOW_MS"
      | "BREAKER_RESET_MS"
    >,
  ) {
    this.#opts = {
      errorPercent: limits.BREAKER_ERROR_PERCENT,
      volumeThreshold: limits.BREAKER_VOLUME_THRESHOLD,
      windowMs: limits.BREAKER_WINDOW_MS,
      resetMs: limits.BREAKER_RESET_MS,
    };
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
