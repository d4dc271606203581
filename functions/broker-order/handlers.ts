/**
 * broker-order's own guard and its two handlers, as factories over their collaborators, with the
 * variables they share declared once (Hono's `Variables` pattern): the guards set `c.var.order`
 * and `c.var.idempotency`, the handlers read them.
 *
 * @example
 * ```ts
 * import type { Hono } from "hono";
 * import { route } from "../../shared/http/route.ts";
 * import { listOrders, type OrderVars, placeOrder, validOrder } from "./handlers.ts";
 * import type { OrdersRepository } from "./orders_repository.ts";
 * import type { OrderPlacer } from "./place_order.ts";
 *
 * declare const app: Hono<OrderVars>, orders: OrdersRepository, placer: OrderPlacer;
 * route(app, "/", { GET: [listOrders(orders, 100)], POST: [validOrder, placeOrder(placer)] });
 * ```
 */
import { userId } from "../../shared/auth/jwt.ts";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../../shared/platform/app.ts";
import type { IdempotencyVariables } from "../../shared/http/idempotency.ts";
import type { RateLimitVariables } from "../../shared/http/rate_limit.ts";
import { toPlainText } from "../../shared/sanitize.ts";
import { validate } from "../../shared/http/validation.ts";
import { formatCursor, OrderRequest, pageQuery, parseOrderJson } from "./order_schema.ts";
import type { OrdersRepository } from "./orders_repository.ts";
import type { OrderPlacer } from "./place_order.ts";
import type { OrderCanceler } from "./cancel.ts";
import type { OrderSync } from "./sync.ts";
import { NotFound } from "../../shared/errors.ts";

/** An order id in a path: a uuid (anything else is no order of anyone's: 404). */
const ORDER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function orderId(c: Context): string {
  const id = c.req.param("id") ?? "";
  if (!ORDER_ID.test(id)) throw new NotFound("No such order.");
  return id.toLowerCase();
}

const JSON_TYPE = {
  "content-type": "application/json; charset=utf-8",
  "cache-control": "no-store",
};

/** `GET /{id}`: one of the caller's orders, one database round trip; 404 for anyone else's. */
export function getOrder(orders: OrdersRepository) {
  return async function getOrder(c: Context<OrderVars>): Promise<Response> {
    const json = await orders.one(userId(c), orderId(c));
    if (json === null) throw new NotFound("No such order.");
    return c.body(json, 200, JSON_TYPE);
  };
}

/** `DELETE /{id}`: cancels the caller's open order at the broker (cancel.ts). */
export function cancelOrder(canceler: OrderCanceler) {
  return async function cancelOrder(c: Context<OrderVars>): Promise<Response> {
    const json = await canceler.cancel(c, userId(c), orderId(c));
    return c.body(json, 200, JSON_TYPE);
  };
}

/** `POST /sync` (service callers): one sync run (sync.ts), `200` with what it did. */
export function syncOrders(sync: OrderSync) {
  return async function syncOrders(c: Context<OrderVars>): Promise<Response> {
    c.header("cache-control", "no-store");
    return c.json(await sync.run());
  };
}

/** Orders per page when `?limit=` is not given. */
const DEFAULT_PAGE = 50;

/** What broker-order's guards give its handlers. */
export type OrderVars = {
  Variables: AppEnv["Variables"] & IdempotencyVariables & RateLimitVariables & {
    /** The validated order, its note already plain text. */
    order: OrderRequest;
  };
};

/** The order body, validated strictly, its decimals read from the JSON text exactly. */
export const validOrder = createMiddleware<OrderVars>(async function validOrder(c, next) {
  const order = validate(OrderRequest, parseOrderJson(await c.req.text()));
  // Plain text before the claim: the first note with markup loads the HTML parser.
  if (order.note !== undefined) order.note = await toPlainText(order.note);
  c.set("order", order);
  await next();
});

/** `GET`: a page of the caller's orders, newest first, one database round trip. */
export function listOrders(orders: OrdersRepository, maxPage: number) {
  const query = pageQuery(maxPage);
  return async function listOrders(c: Context<OrderVars>): Promise<Response> {
    const q = validate(query, c.req.query());
    const limit = q.limit ?? Math.min(DEFAULT_PAGE, maxPage);
    const rows = await orders.list(userId(c), limit + 1, q.before);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    c.header("cache-control", "no-store");
    return c.json({
      orders: page,
      nextCursor: rows.length > limit && last ? formatCursor(last) : null,
    });
  };
}

/** `POST`: places `c.var.order` under `c.var.idempotency` (place_order.ts). */
export function placeOrder(placer: OrderPlacer) {
  return async function placeOrder(c: Context<OrderVars>): Promise<Response> {
    const answer = await placer.place({
      claim: c.get("idempotency"),
      order: c.get("order"),
      userId: userId(c),
      requestId: c.get("requestId"),
    });
    return c.body(answer.body, answer.status, answer.headers);
  };
}
