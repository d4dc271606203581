/**
 * options.greeks: Hull's worked example, put–call parity, the normal CDF against tabulated
 * values, and property tests over the whole valid domain down to a nanosecond before expiry.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import fc from "fast-check";
import {
  greeks,
  GREEKS_BOUNDS,
  type GreeksInput,
  greeksTool,
  normCdf,
  YEAR_SECONDS,
} from "../../../functions/tools/greeks.ts";
import { ToolRegistry } from "../../../functions/tools/registry.ts";
import { HttpError } from "../../../shared/errors.ts";

/** `actual` within `tolerance` of `expected`. */
function assertAlmostEquals(actual: number, expected: number, tolerance: number) {
  assert(
    Math.abs(actual - expected) <= tolerance,
    `expected ${actual} to be within ${tolerance} of ${expected}`,
  );
}

const MIN_EXPIRY_SECONDS = 60;
const minYears = MIN_EXPIRY_SECONDS / YEAR_SECONDS;
const NANOSECOND_YEARS = 1e-9 / YEAR_SECONDS;

// Hull, Options, Futures, and Other Derivatives (8th ed.), examples 15.6 and 19.1–19.6:
// S = 49, K = 50, r = 5 %, σ = 20 %, T = 20 weeks = 0.3846 years, no dividends.
const HULL: GreeksInput = {
  type: "call",
  spot: 49,
  strike: 50,
  volatility: 0.2,
  rate: 0.05,
  dividendYield: 0,
  years: 0.3846,
};

Deno.test("greeks() reproduces Hull's worked example to the figures he prints", () => {
  const g = greeks(HULL, { minYears });
  assertAlmostEquals(g.price, 2.40, 0.005);
  assertAlmostEquals(g.delta, 0.522, 0.0005);
  assertAlmostEquals(g.gamma, 0.066, 0.0005);
  assertAlmostEquals(g.vega, 0.121, 0.0005); // 12.1 per unit of σ → 0.121 per point
  assertAlmostEquals(g.theta, -0.0118, 0.00005); // −4.31 a year → per calendar day
  assertAlmostEquals(g.rho, 0.0891, 0.00005); // 8.91 per unit of r → per point
  assertEquals(g.timeToExpiryYears, 0.3846);
});

Deno.test("greeks(): the put agrees with put–call parity, with and without a dividend yield", () => {
  for (const q of [0, 0.03, -0.01]) {
    const input = { ...HULL, dividendYield: q };
    const call = greeks(input, { minYears });
    const put = greeks({ ...input, type: "put" }, { minYears });
    const T = input.years;
    // C − P = S e^{−qT} − K e^{−rT}; Δc − Δp = e^{−qT}; equal gamma and vega.
    assertAlmostEquals(
      call.price - put.price,
      49 * Math.exp(-q * T) - 50 * Math.exp(-0.05 * T),
      1e-12,
    );
    assertAlmostEquals(call.delta - put.delta, Math.exp(-q * T), 1e-12);
    assertAlmostEquals(call.gamma, put.gamma, 1e-15);
    assertAlmostEquals(call.vega, put.vega, 1e-15);
  }
});

Deno.test("normCdf() matches tabulated values within West's double-precision bound", () => {
  // Reference values: mpmath, 30 digits, rounded to doubles.
  const table: [number, number][] = [
    [0, 0.5],
    [1, 0.8413447460685429],
    [-1.96, 0.024997895148220435],
    [3, 0.9986501019683699],
    [-5, 2.866515718791939e-7],
    [-8, 6.220960574271785e-16],
    [-10, 7.619853024160527e-24],
    [-20, 2.7536241186062337e-89],
  ];
  for (const [x, want] of table) {
    const got = normCdf(x);
    assert(Math.abs(got - want) <= 1e-14, `N(${x}) = ${got}, want ${want}`);
    // The bound is absolute; in the far tail (past 7.07, a shorter continued fraction) the
    // relative error is still below 1e-7 (8.7e-9 at -8).
    if (x < 0) assert(Math.abs(got / want - 1) < 1e-7, `relative error at ${x}: ${got}`);
  }
  assertEquals(normCdf(-38), 0);
  assertEquals(normCdf(38), 1);
  assertEquals(normCdf(-Infinity), 0);
  assertEquals(normCdf(Infinity), 1);
});

const b = GREEKS_BOUNDS;
const input = fc.record({
  type: fc.constantFrom("call" as const, "put" as const),
  spot: fc.double({ min: b.price.min, max: b.price.max, noNaN: true }),
  strike: fc.double({ min: b.price.min, max: b.price.max, noNaN: true }),
  volatility: fc.double({ min: b.volatility.min, max: b.volatility.max, noNaN: true }),
  rate: fc.double({ min: b.rate.min, max: b.rate.max, noNaN: true }),
  dividendYield: fc.double({ min: b.dividendYield.min, max: b.dividendYield.max, noNaN: true }),
  // Log-uniform from one nanosecond to 100 years, plus the edges themselves.
  years: fc.oneof(
    fc.double({ min: Math.log(NANOSECOND_YEARS), max: Math.log(b.years.max), noNaN: true })
      .map(Math.exp),
    fc.constantFrom(NANOSECOND_YEARS, minYears, minYears * (1 + 1e-12), b.years.max),
  ),
});

Deno.test("greeks(): every output is finite over the whole valid domain, down to 1 ns before expiry", () => {
  fc.assert(
    fc.property(input, (p) => {
      const g = greeks(p, { minYears });
      for (const [k, v] of Object.entries(g)) {
        if (!Number.isFinite(v)) throw new Error(`${k} = ${v} for ${JSON.stringify(p)}`);
      }
      assert(g.price >= 0);
      assert(g.gamma >= 0 && g.vega >= 0);
      // |delta| ≤ e^{−qT}, which exceeds 1 only for a negative dividend yield.
      const bound = Math.max(1, Math.exp(-p.dividendYield * p.years)) * (1 + 1e-12);
      if (p.type === "call") assert(g.delta >= 0 && g.delta <= bound, `call delta ${g.delta}`);
      else assert(g.delta >= -bound && g.delta <= 0, `put delta ${g.delta}`);
    }),
    { numRuns: 20_000 },
  );
});

Deno.test("greeks(): below the minimum time to expiry the result is the limit at expiry", () => {
  fc.assert(
    fc.property(
      input,
      fc.double({ min: NANOSECOND_YEARS, max: minYears, maxExcluded: true, noNaN: true }),
      (p, years) => {
        const g = greeks({ ...p, years }, { minYears });
        const intrinsic = p.type === "call"
          ? Math.max(p.spot - p.strike, 0)
          : Math.max(p.strike - p.spot, 0);
        assertEquals(g.price, intrinsic);
        const delta = p.type === "call"
          ? (p.spot > p.strike ? 1 : 0)
          : (p.spot < p.strike ? -1 : 0);
        assertEquals(g.delta, delta);
        assertEquals([g.gamma, g.vega, g.theta, g.rho], [0, 0, 0, 0]);
        assertEquals(g.timeToExpiryYears, years);
      },
    ),
    { numRuns: 5_000 },
  );
});

Deno.test("greeks(): just above the minimum the price is already close to its limit", () => {
  // An at-the-money option a minute from expiry at 20 % volatility is worth ≈ 0.4·σ√T·S.
  const g = greeks({ ...HULL, spot: 50, years: minYears * 1.0001 }, { minYears });
  assert(g.price > 0 && g.price < 50 * 0.2 * Math.sqrt(minYears), `price ${g.price}`);
  assert(Math.abs(g.delta - 0.5) < 0.01, `delta ${g.delta}`);
});

function registry(now: () => number) {
  return new ToolRegistry([
    greeksTool({ minExpirySeconds: MIN_EXPIRY_SECONDS, deadlineMs: 1000 }),
  ], { maxOutputBytes: 4096, now });
}

const params = {
  type: "call",
  spot: 49,
  strike: 50,
  volatility: 0.2,
  rate: 0.05,
  expiresAt: "2027-01-01T00:00:00Z",
};
const expiry = Date.parse(params.expiresAt);

Deno.test("options.greeks: a microsecond before expiresAt, or 1 ns of timeToExpiryYears, answers the expiry limit", async () => {
  // The clock counts milliseconds in a double: around 2027 its resolution is about 0.24 µs.
  const out = JSON.parse(
    await registry(() => expiry - 0.001).execute("options.greeks", { ...params, spot: 51 }),
  );
  assertEquals(
    [out.price, out.delta, out.gamma, out.vega, out.theta, out.rho],
    [1, 1, 0, 0, 0, 0],
  );
  assert(out.timeToExpiryYears > 0 && out.timeToExpiryYears < 1e-12);
  const { expiresAt: _, ...rest } = params;
  const put = JSON.parse(
    await registry(Date.now).execute("options.greeks", {
      ...rest,
      type: "put",
      timeToExpiryYears: NANOSECOND_YEARS,
    }),
  );
  assertEquals([put.price, put.delta, put.gamma, put.vega, put.theta, put.rho], [
    1,
    -1,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("options.greeks: an expired option is refused with 400", async () => {
  for (const now of [expiry, expiry + 1]) {
    const err = await assertRejects(
      () => registry(() => now).execute("options.greeks", params),
      HttpError,
    ) as HttpError;
    assertEquals([err.status, err.code], [400, "OPTION_EXPIRED"]);
  }
  const zero = await assertRejects(
    () =>
      registry(Date.now).execute("options.greeks", {
        ...params,
        expiresAt: undefined,
        timeToExpiryYears: 0,
      }),
    HttpError,
  ) as HttpError;
  assertEquals([zero.status, zero.code], [400, "VALIDATION_FAILED"]);
});

Deno.test("options.greeks: expiresAt a year away prices as timeToExpiryYears 1", async () => {
  const r = registry(() => expiry - YEAR_SECONDS * 1000);
  const byDate = JSON.parse(await r.execute("options.greeks", params));
  const { expiresAt: _, ...rest } = params;
  const byYears = JSON.parse(
    await r.execute("options.greeks", { ...rest, timeToExpiryYears: 1 }),
  );
  assertEquals(byDate, byYears);
  assertEquals(byDate.timeToExpiryYears, 1);
});
