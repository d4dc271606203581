/**
 * What the broker says of an order, checked before it reaches SQL: Alpaca's order object reduced
 * to the fields an order row follows (status, fills, close times, the broker's `updated_at`),
 * each validated (a decimal, an RFC 3339 time, a status word), so a malformed answer is a broker
 * failure (nothing written), never a database error.
 *
 * @example
 * ```ts
 * import { brokerState } from "./broker_state.ts";
 *
 * const s = brokerState({
 *   id: "b-1",
 *   client_order_id: "bo-1",
 *   status: "filled",
 *   filled_qty: "2",
 *   filled_avg_price: "101.25",
 *   updated_at: "2026-12-07T12:00:00.123456789Z",
 * });
 * s.updatedAt; // "2026-12-07T12:00:00.123456Z"
 * ```
 */
import { BrokerUnavailable } from "./broker_client.ts";
import type { BrokerFillActivity, BrokerOrder } from "./broker_client.ts";

/** Statuses after which an order never changes (Alpaca's final ones, and ours). */
export const TERMINAL = ["filled", "canceled", "expired", "rejected", "replaced", "not_placed"];

/** `status not in (…terminal…)`, as SQL (the predicate of the partial index `orders_open`). */
export const OPEN_SQL = `status not in (${TERMINAL.map((s) => `'${s}'`).join(", ")})`;

/** An order's state at the broker, validated. */
export interface BrokerState {
  brokerOrderId: string;
  status: string;
  filledQty: string;
  filledAvgPrice: string | null;
  filledAt: string | null;
  canceledAt: string | null;
  expiredAt: string | null;
  /** The broker's updated_at (microseconds), the order of its answers. */
  updatedAt: string;
}

const DECIMAL = /^\d{1,20}(\.\d{1,40})?$/;
const TIME = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const STATUS = /^[a-z_]{1,40}$/;

function bad(what: string): never {
  throw new BrokerUnavailable(`unreadable order (${what})`);
}

/** Whether `YYYY-MM-DDTHH:MM:SS` names a real instant (no 30 February, no hour 24). */
function realInstant(text: string): boolean {
  const [y, mo, d, h, mi, sec] = text.split(/[-T:]/).map(Number);
  const ms = Date.UTC(y, mo - 1, d, h, mi, sec);
  return y >= 1 && new Date(ms).toISOString().slice(0, 19) === text;
}

/** A time as Postgres keeps it (fraction cut to microseconds), or null; throws when malformed. */
function time(v: string | null | undefined, what: string): string | null {
  if (v === null || v === undefined || v === "") return null;
  const m = TIME.exec(v);
  if (!m || !realInstant(m[1])) bad(what);
  return `${m[1]}${(m[2] ?? "").slice(0, 7)}${m[3]}`;
}

/** The order's state, checked; throws BrokerUnavailable when a field is malformed. */
export function brokerState(o: BrokerOrder): BrokerState {
  if (!STATUS.test(o.status)) bad("status");
  const filledQty = o.filled_qty ?? "0";
  if (!DECIMAL.test(filledQty)) bad("filled_qty");
  const filled = Number(filledQty) > 0;
  // Before a fill the average is null (or "0" from some brokers): only a fill's is checked.
  const avg = filled ? o.filled_avg_price ?? null : null;
  if (avg !== null && (!DECIMAL.test(avg) || Number(avg) <= 0)) bad("filled_avg_price");
  const filledAt = time(o.filled_at, "filled_at");
  const canceledAt = time(o.canceled_at, "canceled_at");
  const expiredAt = time(o.expired_at, "expired_at");
  const updatedAt = time(o.updated_at, "updated_at") ??
    filledAt ?? canceledAt ?? expiredAt ?? time(o.submitted_at, "submitted_at") ??
    time(o.created_at, "created_at") ?? bad("updated_at");
  return {
    brokerOrderId: o.id,
    status: o.status,
    filledQty,
    filledAvgPrice: avg,
    filledAt,
    canceledAt,
    expiredAt,
    updatedAt,
  };
}

/** One fill of the broker's feed, validated: what it adds to its order, and the order after it. */
export interface BrokerFill {
  /** The activity's id (the feed's cursor). */
  id: string;
  brokerOrderId: string;
  /** When it filled (microseconds). */
  time: string;
  /** Shares this fill added, at `price`. */
  qty: string;
  price: string;
  /** The order's filled quantity after this fill. */
  cumQty: string;
  /** The order's status after this fill (`partially_filled` or `filled`). */
  orderStatus: string;
}

/** A fill of the feed, checked; throws BrokerUnavailable when a field is malformed. */
export function brokerFill(a: BrokerFillActivity): BrokerFill {
  const text = (k: string) => typeof a[k] === "string" ? a[k] as string : bad(k);
  const decimal = (k: string) => {
    const v = text(k);
    return DECIMAL.test(v) && Number(v) > 0 ? v : bad(k);
  };
  const brokerOrderId = text("order_id");
  if (brokerOrderId.length === 0 || brokerOrderId.length > 200) bad("order_id");
  const orderStatus = text("order_status");
  if (!STATUS.test(orderStatus)) bad("order_status");
  const qty = decimal("qty");
  const cumQty = decimal("cum_qty");
  if (Number(cumQty) < Number(qty)) bad("cum_qty");
  return {
    id: a.id,
    brokerOrderId,
    time: time(text("transaction_time"), "transaction_time") ?? bad("transaction_time"),
    qty,
    price: decimal("price"),
    cumQty,
    orderStatus,
  };
}

/** The columns of `internal.order_record`'s order for a broker state. */
export function brokerColumns(s: BrokerState): Record<string, string | null> {
  return {
    filled_qty: s.filledQty,
    filled_avg_price: s.filledAvgPrice,
    filled_at: s.filledAt,
    canceled_at: s.canceledAt,
    expired_at: s.expiredAt,
    broker_updated_at: s.updatedAt,
  };
}

/** Whether `s` says something the stored order (`status`, `filledQty`, `updatedAt`) lacks. */
export function differs(
  s: BrokerState,
  stored: { status: string; filledQty: string; updatedAt: string | null },
): boolean {
  if (s.status !== stored.status || Number(s.filledQty) !== Number(stored.filledQty)) return true;
  return stored.updatedAt === null || Date.parse(s.updatedAt) > Date.parse(stored.updatedAt);
}
