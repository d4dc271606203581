/**
 * broker-order: places a user's order at the broker at most once, and lists the user's orders.
 *
 * `POST /functions/v1/broker-order` (user JWT, `Idempotency-Key`): the guards, in order, are the
 * JWT, the per-user "orders" rate limit, `application/json`, the body limit, strict validation
 * (Alpaca's order rules) and the idempotency key; then the order goes to the broker with a
 * `client_order_id` derived from user and key, so the broker itself refuses a second one.
 * - Placed: `201` with the order; the order row and the key's completion commit in one transaction.
 * - Rejected by the broker (4xx): `422 ORDER_REJECTED` with its reason, stored as the key's answer.
 * - Answer lost (deadline, dropped connection, 5xx): the order is looked up by client_order_id
 *   before anything else. Found: as placed. Still unknown: stored as `pending_confirmation`,
 *   answered `202`, and the key is released (not completed): the next retry with the key resumes
 *   by looking the order up, never by sending it blindly again.
 * - Broker unavailable or breaker open: `503` with `Retry-After`; nothing was placed.
 *
 * `GET /functions/v1/broker-order?limit=&before=`: the caller's orders, newest first, in pages of
 * at most ORDERS_PAGE_MAX; `nextCursor` is the next page's `before`.
 */
import type { Context } from "hono";
import { z } from "zod";
import { type AppEnv, defineFunction, type FunctionContext } from "../../shared/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import type { Tx } from "../../shared/db.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import {
  CircuitOpen,
  errorParts,
  Unprocessable,
  UpstreamUnavailable,
} from "../../shared/errors.ts";
import { idempotency, type IdempotencyClaim, idempotencyClaim } from "../../shared/idempotency.ts";
import { requireJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { rateLimit } from "../../shared/rate_limit.ts";
import { toPlainText } from "../../shared/sanitize.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { readJson, validate } from "../../shared/validation.ts";
import {
  BrokerClient,
  type BrokerOrder,
  BrokerOutcomeUnknown,
  BrokerRejected,
  BrokerUnavailable,
  isBrokerHealthy,
} from "./broker_client.ts";
import { formatCursor, OrderRequest, pageQuery } from "./order_schema.ts";

const Env = BrowserEnv.extend({
  BROKER_API_URL: httpUrl,
  BROKER_API_KEY_ID: secret(1),
  BROKER_API_SECRET_KEY: secret(1),
});
type Ctx = FunctionContext<z.infer<typeof Env>>;
type C = Context<AppEnv>;

/** Orders per page when `?limit=` is not given. */
const DEFAULT_PAGE = 50;
/** What a stored order answers while the broker has not confirmed it. */
export const PENDING = "pending_confirmation";

const brokerOrder = defineFunction({
  name: "broker-order",
  env: Env,
  browser: true,
  methods: ["GET", "POST"],
  build(app, ctx) {
    const { db, limits, config } = ctx;
    const broker = new BrokerClient({
      baseUrl: config.BROKER_API_URL,
      keyId: config.BROKER_API_KEY_ID,
      secretKey: config.BROKER_API_SECRET_KEY,
      timeoutMs: limits.BROKER_TIMEOUT_MS,
      breaker: ctx.breakers.get("broker", { isHealthy: isBrokerHealthy }),
      fetch: ctx.fetch,
    });
    if (limits.IDEMPOTENCY_LOCK_SECONDS * 1000 <= 2 * limits.BROKER_TIMEOUT_MS) {
      // Still safe (the broker refuses a second client_order_id, the lease stops a late
      // completion), but a slow attempt would be taken over while it still waits on the broker.
      ctx.log.warn("IDEMPOTENCY_LOCK_SECONDS is shorter than an order's two broker calls", {
        lockSeconds: limits.IDEMPOTENCY_LOCK_SECONDS,
        brokerTimeoutMs: limits.BROKER_TIMEOUT_MS,
      });
    }
    const user = requireJwt({ secret: config.SUPABASE_JWT_SECRET, role: "authenticated" });
    const userId = (c: Context) => (c as C).var.claims.sub!;

    route(app, "/", {
      GET: [user, (c) => listOrders(c, ctx)],
      POST: [
        user,
        rateLimit({
          db,
          policy: "orders",
          quota: limits.ORDER_RATE_LIMIT,
          windowSeconds: limits.ORDER_RATE_WINDOW_SECONDS,
          key: userId,
        }),
        contentType("application/json"),
        bodyLimit(limits.BODY_LIMIT_BYTES),
        async function validOrder(c, next) {
          const order = await readJson(c, OrderRequest);
          // Plain text before any database call of this request: the first note with markup
          // loads DOMPurify's jsdom, which holds the event loop for a moment.
          if (order.note !== undefined) order.note = await toPlainText(order.note);
          c.set("order" as never, order as never);
          await next();
        },
        idempotency({
          db,
          scope: "broker-order",
          owner: userId,
          ttlSeconds: limits.IDEMPOTENCY_TTL_SECONDS,
          lockSeconds: limits.IDEMPOTENCY_LOCK_SECONDS,
          purge: {
            intervalSeconds: limits.IDEMPOTENCY_PURGE_INTERVAL_SECONDS,
            batchSize: limits.IDEMPOTENCY_PURGE_BATCH_SIZE,
            background: ctx.background,
          },
        }),
        (c) => placeOrder(c, ctx, broker),
      ],
    });
  },
});

export default brokerOrder;

/**
 * The broker's `client_order_id` for a key (at most 48 characters, Alpaca's limit): "bo-" and the
 * base64url sha-256 of user, key and the key's lifetime id, so every attempt with the key sends
 * the same id, and a key used again after it expired names a new order.
 */
export async function clientOrderIdFor(userId: string, key: string, keyId: string) {
  const data = new TextEncoder().encode(`${userId}\n${key}\n${keyId}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const b64 = btoa(String.fromCharCode(...digest));
  return `bo-${b64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}`;
}

type Outcome =
  | { kind: "placed"; order: BrokerOrder }
  | { kind: "rejected"; reason: string }
  | { kind: "unknown"; why: string };

/** Sends the order at most once and says what became of it (see the module's summary). */
async function submit(
  broker: BrokerClient,
  claim: IdempotencyClaim,
  order: OrderRequest,
  clientOrderId: string,
): Promise<Outcome> {
  /** The broker's word on the order; null when it has none, unknown when it cannot say. */
  const lookUp = async (): Promise<Outcome | null> => {
    try {
      const found = await broker.orderByClientOrderId(clientOrderId);
      return found ? { kind: "placed", order: found } : null;
    } catch (err) {
      if (err instanceof BrokerUnavailable) return { kind: "unknown", why: err.message };
      throw err;
    }
  };

  if (claim.resuming) {
    // An earlier attempt may have sent it: ask the broker before anything else. (An open
    // breaker throws CircuitOpen here: 503, nothing done.)
    const found = await lookUp();
    if (found) return found;
  }
  try {
    const placed = await broker.placeOrder({
      symbol: order.symbol,
      side: order.side,
      type: order.type,
      qty: order.qty,
      notional: order.notional,
      limit_price: order.limit_price,
      stop_price: order.stop_price,
      time_in_force: order.time_in_force,
      client_order_id: clientOrderId,
    });
    return { kind: "placed", order: placed };
  } catch (err) {
    if (err instanceof BrokerRejected && !err.duplicateClientOrderId) {
      return { kind: "rejected", reason: err.reason };
    }
    if (err instanceof BrokerRejected || err instanceof BrokerOutcomeUnknown) {
      // A duplicate means an earlier attempt's order landed; a lost answer may have landed too.
      // An open breaker (opened by this very failure) leaves it unknown as well.
      const found = await lookUp().catch((e) => {
        if (e instanceof CircuitOpen) return { kind: "unknown", why: e.message } as Outcome;
        throw e;
      });
      if (found) return found;
      if (err instanceof BrokerOutcomeUnknown && err.answered) {
        // The broker answered 5xx and says it has no such order: nothing was placed.
        throw unavailable(err.why);
      }
      return { kind: "unknown", why: err.message };
    }
    if (err instanceof BrokerUnavailable) throw unavailable(err.why, err.retryAfterMs);
    throw err; // CircuitOpen: 503, nothing sent
  }
}

function unavailable(why: string, retryAfterMs = 1000) {
  return new UpstreamUnavailable("broker", why, retryAfterMs);
}

interface OrderRow {
  id: string;
  client_order_id: string;
  broker_order_id: string | null;
  status: string;
  symbol: string;
  side: string;
  type: string;
  qty: string | null;
  notional: string | null;
  limit_price: string | null;
  stop_price: string | null;
  time_in_force: string;
  note: string | null;
  created_at: string;
}

/** The order as the API answers it. */
function orderJson(r: OrderRow) {
  return {
    id: r.id,
    clientOrderId: r.client_order_id,
    brokerOrderId: r.broker_order_id,
    status: r.status,
    symbol: r.symbol,
    side: r.side,
    type: r.type,
    qty: r.qty,
    notional: r.notional,
    limitPrice: r.limit_price,
    stopPrice: r.stop_price,
    timeInForce: r.time_in_force,
    note: r.note,
    createdAt: r.created_at,
  };
}

/** Columns as the API shows them: decimals without trailing zeros, times in UTC to the µs. */
const COLUMNS = (tx: Tx) =>
  tx`id, client_order_id, broker_order_id, status, symbol, side, type,
    trim_scale(qty)::text as qty, trim_scale(notional)::text as notional,
    trim_scale(limit_price)::text as limit_price, trim_scale(stop_price)::text as stop_price,
    time_in_force, note,
    to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at`;

/** Writes the order row (or updates the one an earlier attempt left pending). */
async function saveOrder(
  tx: Tx,
  v: {
    userId: string;
    clientOrderId: string;
    order: OrderRequest;
    note: string | null;
    brokerOrderId: string | null;
    status: string;
    rejectReason: string | null;
  },
): Promise<OrderRow> {
  const o = v.order;
  const [row] = await tx<OrderRow[]>`
    insert into public.orders (id, user_id, client_order_id, broker_order_id, symbol, side, type,
      qty, notional, limit_price, stop_price, time_in_force, note, status, reject_reason)
    values (${crypto.randomUUID()}, ${v.userId}, ${v.clientOrderId}, ${v.brokerOrderId},
      ${o.symbol}, ${o.side}, ${o.type}, ${o.qty ?? null}, ${o.notional ?? null},
      ${o.limit_price ?? null}, ${o.stop_price ?? null}, ${o.time_in_force}, ${v.note},
      ${v.status}, ${v.rejectReason})
    on conflict (client_order_id) do update set
      broker_order_id = coalesce(excluded.broker_order_id, orders.broker_order_id),
      status = excluded.status, reject_reason = excluded.reject_reason,
      updated_at = clock_timestamp()
    where orders.user_id = excluded.user_id
    returning ${COLUMNS(tx)}`;
  if (!row) throw new Error("client_order_id belongs to another user");
  return row;
}

async function placeOrder(c: C, ctx: Ctx, broker: BrokerClient): Promise<Response> {
  const claim = idempotencyClaim(c);
  const order = c.get("order" as never) as OrderRequest;
  const userId = c.var.claims.sub!;
  const note = order.note ?? null; // already plain text (validOrder)
  const clientOrderId = await clientOrderIdFor(userId, claim.key, claim.keyId);

  const outcome = await submit(broker, claim, order, clientOrderId);
  const base = { userId, clientOrderId, order, note };

  if (outcome.kind === "placed") {
    const body = await ctx.db.transaction(async (tx) => {
      const row = await saveOrder(tx, {
        ...base,
        brokerOrderId: outcome.order.id,
        status: outcome.order.status,
        rejectReason: null,
      });
      const json = orderJson(row);
      await claim.complete(tx, 201, json);
      return json;
    });
    return c.json(body, 201);
  }

  if (outcome.kind === "rejected") {
    const reason = (await toPlainText(outcome.reason)) || "no reason given";
    const err = new Unprocessable("ORDER_REJECTED", `The broker rejected the order: ${reason}.`);
    const { status, headers, body } = errorParts(err, c.var.requestId);
    await ctx.db.transaction(async (tx) => {
      await saveOrder(tx, {
        ...base,
        brokerOrderId: null,
        status: "rejected",
        rejectReason: reason,
      });
      await claim.complete(tx, status, body);
    });
    return c.body(body, status as 422, headers);
  }

  // Unknown: recorded as pending, and the key handed to the next retry, which looks it up.
  ctx.log.warn("order outcome unknown; stored pending confirmation", {
    requestId: c.var.requestId,
    clientOrderId,
    why: outcome.why,
  });
  const body = await ctx.db.transaction(async (tx) => {
    const row = await saveOrder(tx, {
      ...base,
      brokerOrderId: null,
      status: PENDING,
      rejectReason: null,
    });
    await claim.release(tx);
    return orderJson(row);
  });
  c.header("retry-after", "1");
  return c.json(body, 202);
}

async function listOrders(c: C, ctx: Ctx): Promise<Response> {
  const max = ctx.limits.ORDERS_PAGE_MAX;
  const q = validate(pageQuery(max), c.req.query());
  const limit = q.limit ?? Math.min(DEFAULT_PAGE, max);
  const userId = c.var.claims.sub!;
  const rows = await ctx.db.query((sql) =>
    sql<OrderRow[]>`
      select ${COLUMNS(sql as unknown as Tx)} from public.orders
      where user_id = ${userId}
      ${
      q.before
        ? sql`and (created_at, id) < (${q.before.createdAt}::timestamptz, ${q.before.id}::uuid)`
        : sql``
    }
      order by created_at desc, id desc
      limit ${limit + 1}`
  );
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  c.header("cache-control", "no-store");
  return c.json({
    orders: page.map(orderJson),
    nextCursor: rows.length > limit && last
      ? formatCursor({ createdAt: last.created_at, id: last.id })
      : null,
  });
}

if (import.meta.main) await serveStandalone(brokerOrder);
