/**
 * Backtests that stream: each bar's close updates a fixed amount of state (cash, shares, the
 * equity peak, the worst drawdown and, for `sma_cross`, two rolling sums over a ring of the last
 * `slow` closes), so a million bars cost no more memory than a thousand. And the `backtest.run`
 * tool, which feeds it the provider's pages as they arrive.
 *
 * Fills are at the bar's close, all-in, fractional shares, no costs. `buy_and_hold` buys at the
 * first close. `sma_cross` is long while the fast simple moving average is above the slow one
 * and flat otherwise (a buy on the cross up, a sale on the cross down), from the first bar on
 * which both averages are defined. Equity is marked at each close; `maxDrawdown` is the largest
 * fall from a peak, as a fraction of that peak.
 *
 * @example
 * ```ts
 * import { Backtest } from "./backtest.ts";
 *
 * const closes = [100, 101, 99, 104, 108, 107, 111];
 * const bt = new Backtest({ kind: "sma_cross", fast: 2, slow: 4 }, 10_000);
 * for (const close of closes) bt.onClose(close);
 * bt.result(); // { bars, trades, finalEquity, totalReturn, maxDrawdown }
 * ```
 */
import * as z from "../../shared/zod.ts";
import { BarsProvider, TooManyBars } from "./bars.ts";
import type { Tool } from "./registry.ts";

export type Strategy = { kind: "buy_and_hold" } | { kind: "sma_cross"; fast: number; slow: number };

export interface BacktestResult {
  bars: number;
  trades: number;
  finalEquity: number;
  totalReturn: number;
  maxDrawdown: number;
}

/** A spread smaller than this fraction of the price is a tie (see onClose). */
export const TIE_TOLERANCE = 1e-9;

/** Rolling simple moving averages over a ring buffer of the last `slow` closes. */
class SmaPair {
  readonly #ring: Float64Array;
  readonly #fast: number;
  #n = 0;
  #sumFast = 0;
  #sumSlow = 0;

  constructor(fast: number, slow: number) {
    this.#ring = new Float64Array(slow);
    this.#fast = fast;
  }

  /** Adds a close; returns fast − slow once both are defined, else undefined. */
  push(close: number): number | undefined {
    const slow = this.#ring.length;
    const i = this.#n % slow;
    if (this.#n >= slow) this.#sumSlow -= this.#ring[i];
    if (this.#n >= this.#fast) this.#sumFast -= this.#ring[(this.#n - this.#fast) % slow];
    this.#ring[i] = close;
    this.#sumSlow += close;
    this.#sumFast += close;
    this.#n++;
    // Rolling sums drift by rounding over a million updates: recompute them exactly once per
    // turn of the ring (O(slow) every `slow` bars, so O(1) a bar).
    if (i === slow - 1) this.#resum();
    if (this.#n < slow) return undefined;
    return this.#sumFast / this.#fast - this.#sumSlow / slow;
  }

  #resum() {
    const slow = this.#ring.length;
    let all = 0;
    let recent = 0;
    for (let k = 0; k < slow; k++) {
      const v = this.#ring[(this.#n - 1 - k + slow * 2) % slow];
      all += v;
      if (k < this.#fast) recent += v;
    }
    if (this.#n >= slow) this.#sumSlow = all;
    this.#sumFast = recent;
  }
}

/** One run's state: constant size whatever the number of bars. */
export class Backtest {
  readonly #initialCash: number;
  readonly #sma?: SmaPair;
  #cash: number;
  #shares = 0;
  #bars = 0;
  #trades = 0;
  #equity: number;
  #peak: number;
  #maxDrawdown = 0;

  constructor(strategy: Strategy, initialCash: number) {
    if (!(initialCash > 0 && Number.isFinite(initialCash))) {
      throw new RangeError(`Initial cash must be positive, got ${initialCash}`);
    }
    if (strategy.kind === "sma_cross") {
      if (
        !(Number.isInteger(strategy.fast) && strategy.fast >= 1 && strategy.fast < strategy.slow)
      ) {
        throw new RangeError(`Need 1 <= fast < slow, got ${strategy.fast} and ${strategy.slow}`);
      }
      this.#sma = new SmaPair(strategy.fast, strategy.slow);
    }
    this.#initialCash = initialCash;
    this.#cash = initialCash;
    this.#equity = initialCash;
    this.#peak = initialCash;
  }

  onClose(close: number): void {
    this.#bars++;
    let wantLong: boolean;
    if (this.#sma) {
      const spread = this.#sma.push(close);
      // Averages within rounding of each other are a tie, not a cross: the rolling sums and a
      // per-window sum may differ in the last bits, and a tie must not flip the position.
      wantLong = spread === undefined ? false : spread > TIE_TOLERANCE * close;
    } else {
      wantLong = true;
    }
    if (wantLong && this.#shares === 0) {
      this.#shares = this.#cash / close;
      this.#cash = 0;
      this.#trades++;
    } else if (!wantLong && this.#shares > 0) {
      this.#cash = this.#shares * close;
      this.#shares = 0;
      this.#trades++;
    }
    this.#equity = this.#shares > 0 ? this.#shares * close : this.#cash;
    if (this.#equity > this.#peak) this.#peak = this.#equity;
    const drawdown = (this.#peak - this.#equity) / this.#peak;
    if (drawdown > this.#maxDrawdown) this.#maxDrawdown = drawdown;
  }

  result(): BacktestResult {
    return {
      bars: this.#bars,
      trades: this.#trades,
      finalEquity: this.#equity,
      totalReturn: this.#equity / this.#initialCash - 1,
      maxDrawdown: this.#maxDrawdown,
    };
  }
}

const SYMBOL = /^[A-Z][A-Z.]{0,9}$/;

/** The parameters of `backtest.run`; `maxWindow` bounds the slow average (and its ring). */
export function backtestParams(maxWindow: number) {
  const window = z.number().int().min(1).max(maxWindow);
  return z.strictObject({
    symbol: z.string().regex(SYMBOL).describe("Ticker, e.g. AAPL or BRK.B"),
    timeframe: z.enum(["1Min", "5Min", "15Min", "1Hour", "1Day"]),
    start: z.iso.datetime({ offset: true }).describe("Start of the range, ISO 8601"),
    end: z.iso.datetime({ offset: true }).describe("End of the range, ISO 8601"),
    strategy: z.discriminatedUnion("kind", [
      z.strictObject({ kind: z.literal("buy_and_hold") }),
      z.strictObject({ kind: z.literal("sma_cross"), fast: window, slow: window }),
    ]),
    initialCash: z.number().min(1).max(1e12),
  }).superRefine((v, ctx) => {
    if (!(Date.parse(v.start) < Date.parse(v.end))) {
      ctx.addIssue({ code: "custom", path: ["end"], message: "end must be after start" });
    }
    if (v.strategy.kind === "sma_cross" && !(v.strategy.fast < v.strategy.slow)) {
      ctx.addIssue({
        code: "custom",
        path: ["strategy", "fast"],
        message: "fast must be shorter than slow",
      });
    }
  });
}

/** A bar's length per timeframe, in ms. */
const BAR_MS = {
  "1Min": 60_000,
  "5Min": 5 * 60_000,
  "15Min": 15 * 60_000,
  "1Hour": 3_600_000,
  "1Day": 86_400_000,
} as const;

/**
 * The most bars `[startMs, endMs)` can hold: one per step of the timeframe, around the clock
 * (bars start on the timeframe's boundaries, and at most ⌈length / step⌉ boundaries fall in any
 * range of that length). A market that trades fewer hours has fewer; none has more.
 */
export function mostBars(timeframe: keyof typeof BAR_MS, startMs: number, endMs: number): number {
  return Math.ceil((endMs - startMs) / BAR_MS[timeframe]);
}

export interface BacktestToolOptions {
  provider: BarsProvider;
  maxBars: number;
  maxWindow: number;
  deadlineMs: number;
}

/** The `backtest.run` tool. */
export function backtestTool(opts: BacktestToolOptions): Tool {
  const Params = backtestParams(opts.maxWindow);
  return {
    name: "backtest.run",
    summary: "Backtests buy_and_hold or sma_cross {fast, slow} over the provider's bars of a " +
      "symbol, streamed page by page: bars, trades, finalEquity, totalReturn, maxDrawdown.",
    params: Params,
    deadlineMs: opts.deadlineMs,
    async run(params, ctx) {
      const p = params as z.infer<typeof Params>;
      // Refused before a bar is read when the range could hold more than the cap (issue 25,
      // finding 3: a hundred-year range read its 500,000 bars before its 422).
      if (mostBars(p.timeframe, Date.parse(p.start), Date.parse(p.end)) > opts.maxBars) {
        throw new TooManyBars(opts.maxBars);
      }
      const bt = new Backtest(p.strategy, p.initialCash);
      const pages = opts.provider.pages({
        symbol: p.symbol,
        timeframe: p.timeframe,
        // Re-serialized from the parsed times: only canonical UTC text reaches the URL.
        start: new Date(p.start).toISOString(),
        end: new Date(p.end).toISOString(),
        maxBars: opts.maxBars,
      }, ctx.signal);
      for await (const closes of pages) {
        for (let i = 0; i < closes.length; i++) bt.onClose(closes[i]);
      }
      return bt.result();
    },
  };
}
