/**
 * backtest.run in-process against the simulated Alpaca Market Data API on loopback: the
 * streaming engine against a naive reference, pages fetched lazily, buy-and-hold's return
 * against the bars, the bar cap, the deadline, and provider failure or 429 mid-run.
 */
import { Database } from "../../../shared/db/db.ts";
import {
  marketDataBreaker,
  ProviderPause,
  ProviderRateLimited,
} from "../../../shared/upstreams/market_data.ts";
import { QuoteStore } from "../../../functions/market-data/quote_cache.ts";
import { freshDatabase } from "../../support/db.ts";
import { breakerSettings, databaseSettings } from "../../../shared/platform/platform.ts";
import { assert, assertEquals, assertRejects } from "@std/assert";
import fc from "fast-check";
import {
  Backtest,
  backtestTool,
  mostBars,
  type Strategy,
  TIE_TOLERANCE,
} from "../../../functions/tools/backtest.ts";
import { BarsProvider } from "../../../functions/tools/bars.ts";
import { ToolRegistry } from "../../../functions/tools/registry.ts";
import { Breakers } from "../../../shared/resilience/circuit_breaker.ts";
import { HttpError } from "../../../shared/errors.ts";
import { parseLimits } from "../../../shared/limits.ts";
import {
  type MarketDataSimulator,
  startMarketDataSimulator,
} from "../../../local/sandbox/market_data.ts";

const KEYS = { keyId: "test-key-id", secretKey: "test-secret-key" };

/** The obvious implementation, with the whole history in an array: what streaming must equal. */
function reference(strategy: Strategy, cash0: number, closes: number[]) {
  let cash = cash0, shares = 0, trades = 0, peak = cash0, maxDrawdown = 0, equity = cash0;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  closes.forEach((c, i) => {
    let long = true;
    if (strategy.kind === "sma_cross") {
      long = i + 1 >= strategy.slow &&
        mean(closes.slice(i + 1 - strategy.fast, i + 1)) -
              mean(closes.slice(i + 1 - strategy.slow, i + 1)) > TIE_TOLERANCE * c;
    }
    if (long && shares === 0) [shares, cash, trades] = [cash / c, 0, trades + 1];
    else if (!long && shares > 0) [cash, shares, trades] = [shares * c, 0, trades + 1];
    equity = shares > 0 ? shares * c : cash;
    peak = Math.max(peak, equity);
    maxDrawdown = Math.max(maxDrawdown, (peak - equity) / peak);
  });
  return {
    bars: closes.length,
    trades,
    finalEquity: equity,
    totalReturn: equity / cash0 - 1,
    maxDrawdown,
  };
}

Deno.test("Backtest: buy_and_hold over known closes: one trade, return and drawdown from the bars", () => {
  const bt = new Backtest({ kind: "buy_and_hold" }, 1000);
  for (const c of [100, 120, 90, 130]) bt.onClose(c);
  const r = bt.result();
  assertEquals(r.bars, 4);
  assertEquals(r.trades, 1);
  assert(Math.abs(r.finalEquity - 1300) < 1e-9);
  assert(Math.abs(r.totalReturn - 0.3) < 1e-12);
  assert(Math.abs(r.maxDrawdown - 0.25) < 1e-12); // 120 → 90
});

Deno.test("Backtest: sma_cross streaming equals the array-based reference on random series", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 1, max: 30 }),
      fc.array(fc.double({ min: 1, max: 1000, noNaN: true }), { minLength: 0, maxLength: 400 }),
      (a, extra, closes) => {
        const strategy: Strategy = { kind: "sma_cross", fast: a, slow: a + extra };
        const bt = new Backtest(strategy, 10_000);
        for (const c of closes) bt.onClose(c);
        const got = bt.result();
        const want = reference(strategy, 10_000, closes);
        assertEquals([got.bars, got.trades], [want.bars, want.trades]);
        for (const k of ["finalEquity", "totalReturn", "maxDrawdown"] as const) {
          assert(Math.abs(got[k] - want[k]) <= 1e-9 * Math.max(1, Math.abs(want[k])), k);
        }
      },
    ),
    {
      numRuns: 300,
      examples: [[1, 1, [31.468452550907003, 1.0000000000000002, 1.0000000000000002]]],
    },
  );
});

interface Rig {
  sim: MarketDataSimulator;
  registry: ToolRegistry;
  /** The provider's pause, in a real database. */
  pause: ProviderPause;
  /** That database. */
  db: Database;
  run(params: Record<string, unknown>): Promise<Record<string, number>>;
}

/** A simulator, a provider and the registry with backtest.run, closed after `fn`. */
async function withRig(
  opts: { pageSize?: number; maxBars?: number; deadlineMs?: number },
  fn: (rig: Rig) => Promise<void>,
) {
  const sim = await startMarketDataSimulator(KEYS);
  const breakers = new Breakers(breakerSettings(parseLimits({})));
  const t = await freshDatabase({ migrated: true });
  const db = new Database({
    url: t.url,
    serial: t.kind === "embedded",
    ...databaseSettings(parseLimits({})),
  });
  try {
    await db.start();
    const pause = new ProviderPause(db);
    const provider = new BarsProvider({
      url: sim.url,
      ...KEYS,
      timeoutMs: 5_000,
      pageSize: opts.pageSize ?? 1_000,
      breaker: marketDataBreaker(breakers),
      pause,
    });
    const registry = new ToolRegistry([
      backtestTool({
        provider,
        maxBars: opts.maxBars ?? 1_000_000,
        maxWindow: 1_000,
        deadlineMs: opts.deadlineMs ?? 30_000,
      }),
    ], { maxOutputBytes: 4096 });
    await fn({
      sim,
      registry,
      pause,
      db,
      run: async (params) => JSON.parse(await registry.execute("backtest.run", params)),
    });
  } finally {
    breakers.shutdown();
    await db.close();
    await t.close();
    await sim.close();
  }
}

const START = "2026-01-05T00:00:00Z";
const minutes = (n: number) => new Date(Date.parse(START) + n * 60_000).toISOString();
const hold = (n: number, symbol = "AAPL") => ({
  symbol,
  timeframe: "1Min",
  start: START,
  end: minutes(n),
  strategy: { kind: "buy_and_hold" },
  initialCash: 10_000,
});

Deno.test("backtest.run: buy-and-hold's return matches the first and last bars, over several pages", async () => {
  await withRig({ pageSize: 1_000 }, async ({ sim, run }) => {
    const r = await run(hold(5_500, "MSFT"));
    assertEquals(r.bars, 5_500);
    assertEquals(r.trades, 1);
    const want = sim.barClose("MSFT", 5_499) / sim.barClose("MSFT", 0) - 1;
    assert(Math.abs(r.totalReturn - want) < 1e-12, `${r.totalReturn} vs ${want}`);
    assert(Math.abs(r.finalEquity - 10_000 * (1 + want)) < 1e-6);
    assert(r.maxDrawdown > 0 && r.maxDrawdown < 1);
    assertEquals(sim.barPages, 6); // 5 full pages and one of 500
    assertEquals(sim.barsServed, 5_500);
  });
});

Deno.test("BarsProvider: the next page is fetched only when the consumer asks for it", async () => {
  await withRig({}, async ({ sim, pause }) => {
    const breakers = new Breakers(breakerSettings(parseLimits({})));
    try {
      const provider = new BarsProvider({
        url: sim.url,
        ...KEYS,
        timeoutMs: 5_000,
        pageSize: 100,
        breaker: marketDataBreaker(breakers),
        pause,
      });
      const pages = provider.pages({
        symbol: "AAPL",
        timeframe: "1Min",
        start: START,
        end: minutes(1_000),
        maxBars: 10_000,
      }, new AbortController().signal);
      assertEquals(sim.barCalls, 0);
      for (let i = 1; i <= 3; i++) {
        const page = await pages.next();
        assertEquals((page.value as number[]).length, 100);
        assertEquals(sim.barCalls, i); // one call per page consumed, none ahead
      }
      await pages.return(undefined);
      assertEquals(sim.barCalls, 3);
    } finally {
      breakers.shutdown();
    }
  });
});

// A million bars, page by page, on a real server process: backtest_memory_test.ts.

Deno.test("backtest.run: a range that could hold more than the bar cap is 422 before a bar is read, whatever its timeframe", async () => {
  await withRig({ pageSize: 1_000, maxBars: 2_500 }, async ({ sim, run }) => {
    const ok = await run(hold(2_500));
    assertEquals(ok.bars, 2_500);
    const day = 86_400_000;
    const from = Date.parse(START);
    const ranges: [string, number][] = [
      ["1Min", 2_501 * 60_000],
      ["5Min", 2_501 * 5 * 60_000],
      ["1Hour", 2_501 * 3_600_000],
      ["1Day", 2_501 * day],
      ["1Min", 100 * 365 * day], // the hundred years
    ];
    for (const [timeframe, length] of ranges) {
      const before = [sim.barCalls, sim.barsServed];
      const params = { ...hold(1), timeframe, end: new Date(from + length).toISOString() };
      const err = await assertRejects(() => run(params), HttpError) as HttpError;
      assertEquals([err.status, err.code], [422, "BACKTEST_TOO_LARGE"], timeframe);
      assertEquals([sim.barCalls, sim.barsServed], before, `${timeframe}: nothing read`);
    }
  });
});

Deno.test("mostBars(): never fewer than the bars a range around the clock holds", () => {
  for (const [tf, step] of [["1Min", 60_000], ["15Min", 900_000], ["1Day", 86_400_000]] as const) {
    for (const offset of [0, 1, step / 2, step - 1]) {
      for (const length of [1, step - 1, step, step + 1, 10 * step, 10 * step + 7]) {
        const start = Date.parse(START) + offset;
        let held = 0; // bar starts (multiples of the step) in [start, start + length)
        for (let t = Math.ceil(start / step) * step; t < start + length; t += step) held++;
        assert(mostBars(tf, start, start + length) >= held, `${tf} +${offset} ${length}`);
      }
    }
  }
});

Deno.test("backtest.run: the provider failing mid-run is a 503 with Retry-After, never a partial result", async () => {
  await withRig({ pageSize: 1_000 }, async ({ sim, run }) => {
    sim.barsFailAfterPages = 2;
    const err = await assertRejects(() => run(hold(5_000)), HttpError) as HttpError;
    assertEquals([err.status, err.code], [503, "UPSTREAM_UNAVAILABLE"]);
    assert(Number(err.headers["retry-after"]) >= 1);
    assertEquals(sim.barCalls, 3); // two pages, then the failed one; no retry storm
  });
});

Deno.test("backtest.run: the provider's 429 mid-run is a 503 with its Retry-After, and pauses later runs", async () => {
  await withRig({ pageSize: 1_000 }, async ({ sim, run }) => {
    sim.barsRateLimitAfterPages = { pages: 1, retryAfterSeconds: 7 };
    const err = await assertRejects(() => run(hold(5_000)), HttpError) as HttpError;
    assertEquals([err.status, err.code], [503, "UPSTREAM_RATE_LIMITED"]);
    assertEquals(err.headers["retry-after"], "7");
    const calls = sim.barCalls;
    const again = await assertRejects(() => run(hold(100)), HttpError) as HttpError;
    assertEquals(again.code, "UPSTREAM_RATE_LIMITED");
    assert(Number(again.headers["retry-after"]) <= 7);
    assertEquals(sim.barCalls, calls); // paused: the provider is not called again
  });
});

Deno.test("the provider's 429 seen by a backtest pauses every instance of tools and of market-data, through Postgres", async () => {
  await withRig({ pageSize: 1_000 }, async ({ sim, run, db }) => {
    sim.barsRateLimitAfterPages = { pages: 0, retryAfterSeconds: 30 };
    await assertRejects(() => run(hold(100)), HttpError);
    const calls = sim.barCalls;
    // Another instance: its own BarsProvider and pause, the same database, nothing in memory.
    const elsewhere = new ProviderPause(db);
    assertEquals(elsewhere.knownMs(), 0);
    const breakers = new Breakers(breakerSettings(parseLimits({})));
    try {
      const other = new BarsProvider({
        url: sim.url,
        ...KEYS,
        timeoutMs: 5_000,
        pageSize: 100,
        breaker: marketDataBreaker(breakers),
        pause: elsewhere,
      });
      const pages = other.pages({
        symbol: "AAPL",
        timeframe: "1Min",
        start: START,
        end: minutes(100),
        maxBars: 1_000,
      }, new AbortController().signal);
      const err = await assertRejects(
        () => pages.next(),
        ProviderRateLimited,
      ) as ProviderRateLimited;
      assert(err.retryAfterMs > 25_000 && err.retryAfterMs <= 30_000, `${err.retryAfterMs}`);
      assertEquals(sim.barCalls, calls, "the other instance did not call the provider");
      // market-data's quote refresh claim reads the same row: it sees the pause too.
      const claim = await new QuoteStore(db).claim(
        ["AAPL"],
        crypto.randomUUID(),
        1_000,
        1_000,
      );
      assertEquals(claim.claimed, []);
      assert(claim.pausedMs > 25_000, `market-data sees the pause: ${claim.pausedMs}`);
    } finally {
      breakers.shutdown();
    }
  });
});

Deno.test("backtest.run: past its deadline the run is a 504 and the provider call is abandoned", async () => {
  await withRig({ pageSize: 1_000, deadlineMs: 300 }, async ({ sim, run }) => {
    sim.delayMs = 5_000;
    const started = Date.now();
    const err = await assertRejects(() => run(hold(5_000)), HttpError) as HttpError;
    assertEquals([err.status, err.code], [504, "TOOL_TIMEOUT"]);
    assert(Date.now() - started < 4_000, "answered at the deadline, not after the provider");
    assertEquals(sim.barCalls, 1);
    sim.delayMs = 0;
  });
});
