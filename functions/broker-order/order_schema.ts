/**
 * What an order request may be: a strict zod schema following Alpaca's rules for
 * `POST /v2/orders` (https://docs.alpaca.markets/reference/postorder), and the page query of the
 * listing. Decimals arrive as JSON numbers or decimal strings and leave as canonical decimal
 * strings, as Alpaca's order objects carry them.
 *
 * @example
 * ```ts
 * import { validate } from "../../shared/http/validation.ts";
 * import { OrderRequest, parseOrderJson } from "./order_schema.ts";
 *
 * const order = validate(
 *   OrderRequest,
 *   parseOrderJson('{"symbol":"AAPL","side":"buy","type":"market","qty":1,"time_in_force":"day"}'),
 * );
 * order.qty; // "1"
 * ```
 */
import * as z from "../../shared/zod.ts";
import { BadRequest } from "../../shared/errors.ts";
import { isPostgresText } from "../../shared/db/sql_literal.ts";

/** Upper bounds (inclusive): far above any real order, low enough to catch a typo or an attack. */
export const QTY_MAX = 100_000_000;
export const NOTIONAL_MAX = 100_000_000;
export const PRICE_MAX = 10_000_000;
/** Alpaca accepts at most 9 decimal places on quantities and prices. */
export const MAX_DECIMALS = 9;
/** The note's maximum length, in characters, before HTML is stripped. */
export const NOTE_MAX = 500;

/** Writes a JSON number as a plain decimal string, expanding exponents (1e-7 → "0.0000001"). */
export function numberToDecimal(n: number): string {
  const s = String(n);
  const m = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/i.exec(s);
  if (!m) return s;
  const [, sign, int, frac = "", expText] = m;
  const digits = int + frac;
  const point = int.length + Number(expText);
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`.replace(/0+$/, "");
  if (point >= digits.length) return sign + digits + "0".repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** Canonical form of a plain decimal string: no leading zeros, no trailing fractional zeros. */
function canonicalDecimal(s: string): string {
  const [int, frac = ""] = s.split(".");
  const i = int.replace(/^0+(?=\d)/, "");
  const f = frac.replace(/0+$/, "");
  return f ? `${i}.${f}` : i;
}

/** Whether canonical decimal `s` is at most `max` (an integer), compared exactly, as text. */
function atMost(s: string, max: number): boolean {
  const [int, frac] = s.split(".");
  const limit = String(max);
  if (int.length !== limit.length) return int.length < limit.length;
  if (int !== limit) return int < limit;
  return frac === undefined;
}

/**
 * A JSON number exactly as written in the body (`parseOrderJson`), so a decimal field is checked
 * on its digits and not on the nearest double: `9999999.999999999` stays that, and
 * `100000000.0000000001` is refused rather than rounded to `100000000`.
 */
export class JsonNumber {
  constructor(readonly source: string) {}
}

/** The decimal fields of an order, read from the body's number literals. */
const DECIMAL_FIELDS = new Set(["qty", "notional", "limit_price", "stop_price"]);

/**
 * Parses an order body, keeping the decimal fields' number literals as written (JsonNumber,
 * through the reviver's `context.source`, ES2025 "JSON.parse source text access"). Throws
 * `400 MALFORMED_JSON` when the body is not JSON.
 */
export function parseOrderJson(text: string): unknown {
  try {
    return JSON.parse(text, function (this: unknown, key, value, context?: { source?: string }) {
      if (typeof value === "number" && DECIMAL_FIELDS.has(key) && context?.source !== undefined) {
        return new JsonNumber(context.source);
      }
      return value;
    });
  } catch {
    throw new BadRequest("The body is not valid JSON.", "MALFORMED_JSON");
  }
}

/** A JSON number literal (`-1.5e3`) as a plain decimal string, exactly (no double in between). */
export function literalToDecimal(source: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/i.exec(source);
  if (!m) return source;
  const [, sign, int, frac = "", expText = "0"] = m;
  const exp = Number(expText);
  if (exp === 0) return source.replace(/e.*$/i, "");
  if (Math.abs(exp) > 400) {
    return `${sign}${exp > 0 ? "9".repeat(401) : "0." + "0".repeat(401) + "1"}`;
  }
  const digits = int + frac;
  const point = int.length + exp;
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  if (point >= digits.length) return sign + digits + "0".repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** A positive decimal (number or string) with at most 9 decimals and at most `max`; a string out. */
export function decimal(max: number) {
  return z.union([z.number(), z.string(), z.instanceof(JsonNumber)]).transform((value, ctx) => {
    if (typeof value === "number" && !Number.isFinite(value)) {
      ctx.addIssue({ code: "custom", message: "must be a finite number" });
      return z.NEVER;
    }
    const text = value instanceof JsonNumber
      ? literalToDecimal(value.source)
      : typeof value === "number"
      ? numberToDecimal(value)
      : value.trim();
    if (!/^\d{1,20}(\.\d+)?$/.test(text)) {
      ctx.addIssue({ code: "custom", message: "must be a positive decimal such as 10 or 12.5" });
      return z.NEVER;
    }
    const canonical = canonicalDecimal(text);
    if ((canonical.split(".")[1] ?? "").length > MAX_DECIMALS) {
      ctx.addIssue({ code: "custom", message: `must have at most ${MAX_DECIMALS} decimal places` });
      return z.NEVER;
    }
    if (/^0(\.0*)?$/.test(canonical)) {
      ctx.addIssue({ code: "custom", message: "must be greater than 0" });
      return z.NEVER;
    }
    if (!atMost(canonical, max)) {
      ctx.addIssue({ code: "custom", message: `must be at most ${max}` });
      return z.NEVER;
    }
    return canonical;
  }).describe(
    `A positive decimal, as a JSON number or a string: at most ${MAX_DECIMALS} decimal places, at most ${max}`,
  );
}

export const ORDER_TYPES = ["market", "limit", "stop", "stop_limit"] as const;
export const TIME_IN_FORCE = ["day", "gtc", "ioc", "fok", "opg", "cls"] as const;

/** Which prices each order type needs (Alpaca: limit_price for limit and stop_limit, stop_price for stop and stop_limit). */
const PRICES: Record<(typeof ORDER_TYPES)[number], { limit: boolean; stop: boolean }> = {
  market: { limit: false, stop: false },
  limit: { limit: true, stop: false },
  stop: { limit: false, stop: true },
  stop_limit: { limit: true, stop: true },
};

/** The body of `POST /functions/v1/broker-order`. Unknown fields are rejected. */
export const OrderRequest = z.strictObject({
  symbol: z.string().regex(
    /^[A-Z][A-Z.]{0,9}$/,
    "must be 1-10 capital letters or dots, such as AAPL or BRK.B",
  ),
  side: z.enum(["buy", "sell"]),
  type: z.enum(ORDER_TYPES),
  qty: decimal(QTY_MAX).optional(),
  notional: decimal(NOTIONAL_MAX).optional(),
  limit_price: decimal(PRICE_MAX).optional(),
  stop_price: decimal(PRICE_MAX).optional(),
  time_in_force: z.enum(TIME_IN_FORCE),
  note: z.string().max(NOTE_MAX, `must be at most ${NOTE_MAX} characters`).refine(
    isPostgresText,
    "must be text without NUL characters or lone surrogates",
  ).optional(),
}).superRefine((o, ctx) => {
  if ((o.qty === undefined) === (o.notional === undefined)) {
    ctx.addIssue({
      code: "custom",
      path: [o.qty === undefined ? "qty" : "notional"],
      message: "send exactly one of qty and notional",
    });
  }
  // Alpaca: notional (a dollar amount) works only for market orders with time_in_force day.
  if (o.notional !== undefined && (o.type !== "market" || o.time_in_force !== "day")) {
    ctx.addIssue({
      code: "custom",
      path: ["notional"],
      message: "notional is allowed only for market orders with time_in_force day",
    });
  }
  const needs = PRICES[o.type];
  for (
    const [field, needed] of [["limit_price", needs.limit], ["stop_price", needs.stop]] as const
  ) {
    if (needed && o[field] === undefined) {
      ctx.addIssue({ code: "custom", path: [field], message: `a ${o.type} order needs ${field}` });
    }
    if (!needed && o[field] !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: [field],
        message: `a ${o.type} order takes no ${field}`,
      });
    }
  }
});

export type OrderRequest = z.infer<typeof OrderRequest>;

/** `?limit=&before=` of the listing; `before` is the `nextCursor` of the previous page. */
export function pageQuery(maxLimit: number) {
  return z.strictObject({
    limit: z.string().regex(/^\d{1,4}$/, "must be a whole number").transform(Number).pipe(
      z.number().int().min(1).max(maxLimit),
    ).optional().describe(`Orders per page, 1 to ${maxLimit} (default 50)`),
    before: z.string().max(100).transform((value, ctx) => {
      const cursor = parseCursor(value);
      if (!cursor) {
        ctx.addIssue({ code: "custom", message: "must be the nextCursor of a previous page" });
        return z.NEVER;
      }
      return cursor;
    }).optional().describe("The nextCursor of the previous page"),
  });
}

export interface Cursor {
  createdAt: string;
  id: string;
}

const CURSOR =
  /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/** A page cursor: the last row's creation time (microseconds, UTC) and id. */
export function formatCursor(c: Cursor): string {
  return `${c.createdAt}_${c.id}`;
}

/**
 * The cursor, or null when it is not one: its time must be a real instant Postgres can hold
 * (year 0001 or later; no 30 February, no hour 24: the date must read back unchanged).
 */
export function parseCursor(value: string): Cursor | null {
  const m = CURSOR.exec(value);
  if (!m) return null;
  const ms = Date.parse(m[1]);
  if (Number.isNaN(ms) || m[1].startsWith("0000")) return null;
  if (new Date(ms).toISOString().slice(0, 19) !== m[1].slice(0, 19)) return null;
  return { createdAt: m[1], id: m[2] };
}
