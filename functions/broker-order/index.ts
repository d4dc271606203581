/**
 * broker-order: places a user's order at the broker at most once (place_order.ts), lists the
 * user's orders (orders_repository.ts), and follows each order after it is placed
 * (docs/order-lifecycle.md). `POST`: JWT, the per-user "orders" rate limit (counted in the same
 * statement as the idempotency claim), `application/json`, the body limit, strict validation, the
 * idempotency key, then the order. `GET ?limit=&before=`: the caller's orders, newest first;
 * `nextCursor` is the next page's `before`. `GET /{id}`: one order. `DELETE /{id}`: cancels it
 * (cancel.ts, the same per-user limit). `POST /sync`: service callers only (the schedule), brings
 * open orders up to date with the broker (sync.ts).
 */
import { rateLimitPurge } from "../../shared/platform/platform.ts";
import { defineFunction } from "../../shared/platform/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/http/body_limit.ts";
import { contentType } from "../../shared/http/content_type.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { expiredKeysPurge, idempotency } from "../../shared/http/idempotency.ts";
import { purgeAfter } from "../../shared/resilience/housekeeping.ts";
import { requireJwt, userId } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { deferRateLimit, RateLimiter } from "../../shared/http/rate_limit.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { brokerClientFor } from "./broker_client.ts";
import { OrderCanceler } from "./cancel.ts";
import {
  cancelOrder,
  getOrder,
  listOrders,
  type OrderVars,
  placeOrder,
  syncOrders,
  validOrder,
} from "./handlers.ts";
import { LifecycleRepository } from "./lifecycle_repository.ts";
import { OrdersRepository } from "./orders_repository.ts";
import { OrderPlacer } from "./place_order.ts";
import { OrderSync } from "./sync.ts";

const Env = BrowserEnv.extend({
  BROKER_API_URL: httpUrl,
  BROKER_API_KEY_ID: secret(1),
  BROKER_API_SECRET_KEY: secret(1),
});

const brokerOrder = defineFunction<typeof Env, OrderVars>({
  name: "broker-order",
  env: Env,
  browser: true,
  build(app, { db, limits: l, config, ...ctx }) {
    const broker = brokerClientFor(config, { ...ctx, limits: l });
    const orders = new OrdersRepository(db);
    const lifecycle = new LifecycleRepository(db, {
      budgetKey: "broker-api:account",
      budgetQuota: l.BROKER_API_RATE_LIMIT,
      budgetWindowMs: l.BROKER_API_RATE_WINDOW_SECONDS * 1000,
      absentAfterSeconds: l.ORDER_ABSENT_AFTER_SECONDS,
    });
    const placer = new OrderPlacer({ broker, orders, log: ctx.log, limits: l });
    const sync = new OrderSync({ broker, repo: lifecycle, limits: l });
    const user = requireJwt<OrderVars>({ tokens: ctx.tokens, role: "authenticated" });
    const service = requireJwt<OrderVars>({ tokens: ctx.tokens, role: "service_role" });
    const quota = { quota: l.ORDER_RATE_LIMIT, windowSeconds: l.ORDER_RATE_WINDOW_SECONDS };
    const perUser = new RateLimiter(db, { policy: "orders", ...quota, stats: ctx.rateLimits });
    const canceler = new OrderCanceler({ broker, repo: lifecycle, limiter: perUser });
    // Expired keys are purged after orders and after each scheduled sync (pg_cron's schedule
    // carries the purge when nobody places orders).
    const purge = expiredKeysPurge({
      db,
      intervalSeconds: l.IDEMPOTENCY_PURGE_INTERVAL_SECONDS,
      batchSize: l.IDEMPOTENCY_PURGE_BATCH_SIZE,
      background: ctx.background,
      log: ctx.log,
      now: ctx.now,
    });
    const keys = { ttlSeconds: l.IDEMPOTENCY_TTL_SECONDS, lockSeconds: l.IDEMPOTENCY_LOCK_SECONDS };

    route(app, "/", {
      GET: [user, listOrders(orders, l.ORDERS_PAGE_MAX)],
      POST: [
        user,
        deferRateLimit({
          db,
          policy: "orders",
          ...quota,
          key: userId,
          stats: ctx.rateLimits,
          purge: rateLimitPurge({ limits: l, ...ctx }),
        }),
        contentType("application/json"),
        bodyLimit(l.BODY_LIMIT_BYTES),
        validOrder,
        idempotency({ db, scope: "broker-order", owner: userId, ...keys, purge }),
        placeOrder(placer),
      ],
    });
    route(app, "/sync", { POST: [service, purgeAfter(purge), syncOrders(sync)] });
    route(app, "/:id", {
      GET: [user, getOrder(orders)],
      DELETE: [user, cancelOrder(canceler)],
    });
  },
});

export default brokerOrder;

if (import.meta.main) await serveStandalone(brokerOrder);
