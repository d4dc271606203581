/**
 * The bodies the functions answer with, as zod schemas for the OpenAPI document (routes.ts).
 * Requests are described by the very schemas the functions validate with (imported from their
 * modules); answers are built by the handlers from typed values and validated by no schema at run
 * time, so they are written here, once, and the tests hold every real answer to them
 * (tests/functions/openapi_responses_test.ts validates each against docs/openapi.json).
 *
 * @example
 * ```ts
 * import { ErrorBody } from "./responses.ts";
 *
 * ErrorBody.parse({ error: { code: "NOT_FOUND", message: "No such route.", requestId: "r-1" } });
 * ```
 */
import * as z from "zod";

/** The error shape of every refusal and failure (the contract's "Every response"). */
export const ErrorBody = z.strictObject({
  error: z.strictObject({
    code: z.string().regex(/^[A-Z][A-Z0-9_]*$/).describe("UPPER_SNAKE; see each response"),
    message: z.string().describe("Plain words, safe to show; never a stack, SQL or secret"),
    requestId: z.string().describe("The x-request-id of the request"),
    issues: z.array(z.strictObject({ path: z.string(), message: z.string() })).max(20)
      .optional().describe("Validation errors only: each invalid field, dotted path"),
  }),
});

const decimalText = z.string().regex(/^\d+(\.\d+)?$/).describe("A decimal, as text");
const utcMicros = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/)
  .describe("UTC, microseconds");

/** An order as broker-order answers it. */
export const Order = z.object({
  id: z.string().uuid(),
  clientOrderId: z.string().max(48),
  brokerOrderId: z.string().nullable(),
  status: z.string().describe(
    "Alpaca's words (new, accepted, partially_filled, filled, canceled, …) or " +
      "pending_confirmation (outcome unknown) or not_placed",
  ),
  symbol: z.string(),
  side: z.enum(["buy", "sell"]),
  type: z.enum(["market", "limit", "stop", "stop_limit"]),
  qty: decimalText.nullable(),
  notional: decimalText.nullable(),
  limitPrice: decimalText.nullable(),
  stopPrice: decimalText.nullable(),
  timeInForce: z.enum(["day", "gtc", "ioc", "fok", "opg", "cls"]),
  note: z.string().nullable().describe("Plain text: markup is removed"),
  filledQty: decimalText.describe('Filled so far: "0" before a fill; never decreases'),
  filledAvgPrice: decimalText.nullable().describe("Average fill price; null before a fill"),
  filledAt: utcMicros.nullable(),
  canceledAt: utcMicros.nullable(),
  expiredAt: utcMicros.nullable(),
  rejectReason: z.string().nullable().describe("The broker's reason, in plain words"),
  createdAt: utcMicros,
  updatedAt: utcMicros,
});

/** `POST /broker-order/sync`: what one run did. */
export const SyncReport = z.strictObject({
  open: z.number().int().describe("Open orders looked at"),
  pending: z.number().int().describe("pending_confirmation orders looked at"),
  brokerReads: z.number().int().describe("Calls made to the broker"),
  fills: z.number().int().describe("Fills read from the broker's feed"),
  changed: z.number().int().describe("Orders whose state moved on"),
  notPlaced: z.number().int().describe("Pending orders the broker provably never got"),
  unreadable: z.number().int().describe("Broker order objects (or fills) skipped as malformed"),
  stopped: z.enum(["broker_rate_budget"]).nullable()
    .describe("Why the run stopped early (the broker's budget spent), or null"),
});

const isoTime = z.string().describe("ISO 8601, UTC");

/** `POST /payment-webhook/catch-up`: what one run did. */
export const CatchUpReport = z.strictObject({
  applied: z.number().int().describe("Events this run recorded with effect"),
  ignored: z.number().int().describe("Events this run recorded without effect"),
  alreadyApplied: z.number().int().describe("Events read that were already recorded"),
  read: z.number().int(),
  pages: z.number().int(),
  hasMore: z.boolean().describe("The run stopped at its bound; the next one continues"),
  cursorSaved: z.boolean(),
  cursor: z.strictObject({
    coveredUntil: isoTime.nullable(),
    lagSeconds: z.number().nullable(),
    scan: z.strictObject({ from: isoTime, to: isoTime, after: z.string().nullable() }).nullable(),
  }),
});

/** `GET /broker-order`. */
export const OrderPage = z.strictObject({
  orders: z.array(Order),
  nextCursor: z.string().nullable().describe("The next page's `before`; null on the last page"),
});

/** A Supabase Auth session (login, refresh). */
export const Session = z.strictObject({
  access_token: z.string(),
  token_type: z.string(),
  expires_in: z.number(),
  expires_at: z.number().optional(),
  refresh_token: z.string(),
  user: z.strictObject({ id: z.string(), email: z.string().optional() }),
});

/** `POST /auth/logout`. */
export const SignedOut = z.strictObject({
  signedOut: z.literal(true),
  alreadySignedOut: z.boolean(),
});

/** `GET /auth/oauth/start`. */
export const OAuthStart = z.strictObject({
  url: z.string().url().describe("The broker's authorize URL, carrying `state`"),
});

/** `POST /auth/oauth/callback`. */
export const OAuthConnected = z.strictObject({ connected: z.literal(true), broker: z.string() });

/** One quote of market-data. */
export const Quote = z.strictObject({
  bid: z.number(),
  ask: z.number(),
  bidSize: z.number(),
  askSize: z.number(),
  timestamp: z.string(),
  source: z.enum(["cache", "live"]),
  ageSeconds: z.number().min(0),
  stale: z.literal(true).optional().describe("Served from cache while the provider fails"),
});

/** `GET /market-data`. */
export const Quotes = z.strictObject({
  quotes: z.record(z.string(), Quote),
  asOf: z.string().datetime(),
  notFound: z.array(z.string()).optional().describe("Symbols the provider does not know"),
});

/** `POST /discord-alert`. */
export const AlertQueued = z.strictObject({
  id: z.union([z.string(), z.number()]),
  coalesced: z.boolean().describe("Merged into a queued alert with the same dedupKey"),
});

/** `POST /discord-alert/drain`. */
export const DrainReport = z.strictObject({
  sent: z.number().int(),
  deferred: z.number().int(),
  retried: z.number().int(),
  dead: z.number().int(),
  stopped: z.enum(["empty", "waiting", "budget", "circuit_open", "webhook_unusable"]),
  remaining: z.number().int(),
  durationMs: z.number(),
});

/** `POST /payment-webhook`. */
export const Received = z.strictObject({
  received: z.literal(true),
  duplicate: z.literal(true).optional().describe("The event id was already applied"),
});

/** `GET /status`. */
export const Status = z.object({
  status: z.enum(["ok", "fail_safe"]),
  reason: z.enum(["database unavailable", "schema outdated"]).optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  dependencies: z.record(z.string(), z.unknown()).optional()
    .describe("Service callers only: database, breakers, alerts, rate limits"),
});

/** `GET /tools`. */
export const ToolList = z.strictObject({
  tools: z.array(z.strictObject({
    name: z.string(),
    summary: z.string(),
    parameters: z.record(z.string(), z.unknown()).describe("JSON Schema of `params`"),
  })),
});

/** `options.greeks`' result. */
export const GreeksResult = z.strictObject({
  price: z.number(),
  delta: z.number(),
  gamma: z.number(),
  theta: z.number().describe("Per calendar day"),
  vega: z.number().describe("Per volatility point"),
  rho: z.number().describe("Per rate point"),
  timeToExpiryYears: z.number(),
});

/** `backtest.run`'s result. */
export const BacktestResult = z.strictObject({
  bars: z.number().int(),
  trades: z.number().int(),
  finalEquity: z.number(),
  totalReturn: z.number(),
  maxDrawdown: z.number(),
});
