/**
 * Black–Scholes–Merton price and Greeks of a European option with a continuous dividend yield
 * (Merton 1973; formulas as in Hull, "Options, Futures, and Other Derivatives", ch. 19), and the
 * `options.greeks` tool around them.
 *
 * Units follow what traders quote: theta per calendar day (the yearly figure / 365), vega per 1
 * volatility point and rho per 1 rate point (the raw derivative / 100). A year is 365 days.
 *
 * Near expiry the formulas divide by σ√T: below `minYears` the answer is the limit at expiry
 * (intrinsic value; delta 0 or ±1; gamma, vega, theta and rho 0) instead of numbers that grow
 * without bound. Every input is bounded by the schema so that every output is finite.
 *
 * @example
 * ```ts
 * import { greeks, YEAR_SECONDS } from "./greeks.ts";
 *
 * const g = greeks({
 *   type: "call",
 *   spot: 49,
 *   strike: 50,
 *   volatility: 0.2,
 *   rate: 0.05,
 *   dividendYield: 0,
 *   years: 0.3846,
 * }, { minYears: 60 / YEAR_SECONDS });
 * g.price; // ≈ 2.40
 * ```
 */
import * as z from "../../shared/zod.ts";
import { BadRequest } from "../../shared/errors.ts";
import type { Tool } from "./registry.ts";

/** Seconds in the year this module counts in (365 days, as theta per calendar day assumes). */
export const YEAR_SECONDS = 365 * 86_400;

/**
 * Standard normal CDF: Hart (1968) algorithm 5666 as given by G. West, "Better approximations to
 * cumulative normal functions", Wilmott Magazine (2005), fig. 2 — a rational approximation with
 * absolute error below 1e-14 over the whole real line (double precision; relative error in the
 * lower tail below 1e-7). Written here because no
 * maintained npm package ships a double-precision normal CDF without a heavy dependency; the
 * test checks it against tabulated values.
 */
export function normCdf(x: number): number {
  const z = Math.abs(x);
  let tail: number;
  if (z > 37) {
    tail = 0;
  } else {
    const e = Math.exp(-z * z / 2);
    if (z < 7.07106781186547) {
      let n = 3.52624965998911e-2 * z + 0.700383064443688;
      n = n * z + 6.37396220353165;
      n = n * z + 33.912866078383;
      n = n * z + 112.079291497871;
      n = n * z + 221.213596169931;
      n = n * z + 220.206867912376;
      let d = 8.83883476483184e-2 * z + 1.75566716318264;
      d = d * z + 16.064177579207;
      d = d * z + 86.7807322029461;
      d = d * z + 296.564248779674;
      d = d * z + 637.333633378831;
      d = d * z + 793.826512519948;
      d = d * z + 440.413735824752;
      tail = e * n / d;
    } else {
      let b = z + 0.65;
      b = z + 4 / b;
      b = z + 3 / b;
      b = z + 2 / b;
      b = z + 1 / b;
      tail = e / b / 2.506628274631;
    }
  }
  return x > 0 ? 1 - tail : tail;
}

/** Standard normal density. */
export function normPdf(x: number): number {
  return Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI);
}

export interface GreeksInput {
  type: "call" | "put";
  spot: number;
  strike: number;
  volatility: number;
  rate: number;
  dividendYield: number;
  /** Time to expiry in years (> 0). */
  years: number;
}

export interface Greeks {
  price: number;
  delta: number;
  gamma: number;
  theta: number;
  vega: number;
  rho: number;
  timeToExpiryYears: number;
}

/**
 * Price and Greeks by Black–Scholes–Merton; the expiry limit below `minYears`.
 * Throws RangeError if `years` is not positive (the caller answers an expired option first).
 */
export function greeks(p: GreeksInput, opts: { minYears: number }): Greeks {
  const { spot: S, strike: K, volatility: sigma, rate: r, dividendYield: q, years: T } = p;
  if (!(T > 0)) throw new RangeError(`Time to expiry must be positive, got ${T}`);
  const call = p.type === "call";
  if (T < opts.minYears) {
    // The limit as T → 0: the payoff, and a step for delta (0 at the money, where the step is).
    return {
      price: call ? Math.max(S - K, 0) : Math.max(K - S, 0),
      delta: call ? (S > K ? 1 : 0) : (S < K ? -1 : 0),
      gamma: 0,
      theta: 0,
      vega: 0,
      rho: 0,
      timeToExpiryYears: T,
    };
  }
  const sqrtT = Math.sqrt(T);
  const volT = sigma * sqrtT;
  const d1 = (Math.log(S / K) + (r - q + sigma * sigma / 2) * T) / volT;
  const d2 = d1 - volT;
  const dq = Math.exp(-q * T);
  const dr = Math.exp(-r * T);
  const pdf = normPdf(d1);
  const gamma = dq * pdf / (S * volT);
  const vega = S * dq * pdf * sqrtT / 100;
  const decay = -S * dq * pdf * sigma / (2 * sqrtT);
  if (call) {
    const nd1 = normCdf(d1);
    const nd2 = normCdf(d2);
    return {
      price: Math.max(0, S * dq * nd1 - K * dr * nd2),
      delta: dq * nd1,
      gamma,
      theta: (decay - r * K * dr * nd2 + q * S * dq * nd1) / 365,
      vega,
      rho: K * T * dr * nd2 / 100,
      timeToExpiryYears: T,
    };
  }
  const nmd1 = normCdf(-d1);
  const nmd2 = normCdf(-d2);
  return {
    price: Math.max(0, K * dr * nmd2 - S * dq * nmd1),
    delta: -dq * nmd1,
    gamma,
    theta: (decay + r * K * dr * nmd2 - q * S * dq * nmd1) / 365,
    vega,
    rho: -K * T * dr * nmd2 / 100,
    timeToExpiryYears: T,
  };
}

/**
 * The bounds of the valid domain. Within them every intermediate stays finite: the smallest
 * σ√T (1e-4 × √(1 ns in years) ≈ 6e-13) times the smallest spot stays far above the double
 * range's floor, and e^{|r|T} ≤ e^{100}.
 */
export const GREEKS_BOUNDS = {
  price: { min: 1e-6, max: 1e9 },
  volatility: { min: 1e-4, max: 5 },
  rate: { min: -1, max: 1 },
  dividendYield: { min: -1, max: 1 },
  years: { max: 100 },
} as const;

const B = GREEKS_BOUNDS;
const money = z.number().min(B.price.min).max(B.price.max);

export const GreeksParams = z.strictObject({
  type: z.enum(["call", "put"]),
  spot: money.describe("Price of the underlying"),
  strike: money,
  volatility: z.number().min(B.volatility.min).max(B.volatility.max)
    .describe("Annualised volatility as a fraction (0.2 = 20 %)"),
  rate: z.number().min(B.rate.min).max(B.rate.max)
    .describe("Continuously compounded risk-free rate as a fraction"),
  dividendYield: z.number().min(B.dividendYield.min).max(B.dividendYield.max).optional()
    .describe("Continuous dividend yield as a fraction; default 0"),
  expiresAt: z.iso.datetime({ offset: true }).optional()
    .describe("Expiry as an ISO 8601 time; give this or timeToExpiryYears"),
  timeToExpiryYears: z.number().positive().max(B.years.max).optional()
    .describe("Time to expiry in years of 365 days; give this or expiresAt"),
}).superRefine((v, ctx) => {
  if ((v.expiresAt === undefined) === (v.timeToExpiryYears === undefined)) {
    ctx.addIssue({
      code: "custom",
      path: ["expiresAt"],
      message: "Give exactly one of expiresAt and timeToExpiryYears",
    });
  }
});

/** The `options.greeks` tool; `minExpirySeconds` is TOOLS_GREEKS_MIN_EXPIRY_SECONDS. */
export function greeksTool(opts: { minExpirySeconds: number; deadlineMs: number }): Tool {
  const minYears = opts.minExpirySeconds / YEAR_SECONDS;
  return {
    name: "options.greeks",
    summary: "Black–Scholes–Merton price, delta, gamma, theta (per day), vega and rho (per " +
      "point) of a European option with a continuous dividend yield.",
    params: GreeksParams,
    deadlineMs: opts.deadlineMs,
    run(params, ctx) {
      const p = params as z.infer<typeof GreeksParams>;
      let years: number;
      if (p.expiresAt !== undefined) {
        years = (Date.parse(p.expiresAt) - ctx.now()) / 1000 / YEAR_SECONDS;
        if (years > B.years.max) {
          throw new BadRequest(`expiresAt is more than ${B.years.max} years away.`, "OUT_OF_RANGE");
        }
      } else {
        years = p.timeToExpiryYears!;
      }
      if (!(years > 0)) throw new BadRequest("The option has expired.", "OPTION_EXPIRED");
      return Promise.resolve(greeks({
        type: p.type,
        spot: p.spot,
        strike: p.strike,
        volatility: p.volatility,
        rate: p.rate,
        dividendYield: p.dividendYield ?? 0,
        years,
      }, { minYears }));
    },
  };
}
