/**
 * Cancelling an order (`DELETE /broker-order/{id}`): the caller's open order is cancelled at the
 * broker (Alpaca `DELETE /v2/orders/{id}`: `204` accepted, `422` no longer cancelable), its state
 * read back (`GET /v2/orders/{id}`) and written under the never-backwards rule, so a cancel racing
 * a fill ends in whatever the broker decided.
 *
 * - `200` with the order: `pending_cancel` or `canceled` (a repeat on a canceled order answers it
 *   again, no broker call).
 * - `409 ORDER_NOT_CANCELABLE`: filled, expired, rejected… (by the stored state, or by the broker's
 *   `422` and its read-back), or still `pending_confirmation` (no broker order to cancel yet).
 * - `404 NOT_FOUND`: an unknown id or another user's.
 * - `429`: the per-user "orders" limit (counted in the first statement); `503`: the broker failed,
 *   its breaker is open, or the broker's request budget is spent.
 *
 * Database: at most two round trips (the hit, the order and the budget; the write and its answer).
 *
 * @example
 * ```ts
 * import type { Context } from "hono";
 * import type { RateLimiter } from "../../shared/http/rate_limit.ts";
 * import type { BrokerClient } from "./broker_client.ts";
 * import { OrderCanceler } from "./cancel.ts";
 * import type { LifecycleRepository } from "./lifecycle_repository.ts";
 *
 * declare const broker: BrokerClient, repo: LifecycleRepository, limiter: RateLimiter;
 * declare const c: Context;
 * const canceler = new OrderCanceler({ broker, repo, limiter });
 * const json = await canceler.cancel(c, "6f1c1a3e-0000-4000-8000-000000000001", crypto.randomUUID());
 * ```
 */
import type { Context } from "hono";
import { CircuitOpen, Conflict, NotFound, UpstreamUnavailable } from "../../shared/errors.ts";
import type { RateLimiter } from "../../shared/http/rate_limit.ts";
import { type BrokerClient, BrokerUnavailable } from "./broker_client.ts";
import { type BrokerState, brokerState, TERMINAL } from "./broker_state.ts";
import type { Change, LifecycleRepository } from "./lifecycle_repository.ts";

/** Broker calls a cancel may make: the cancel and its read-back. */
const CALLS = 2;

export interface OrderCancelerOptions {
  broker: BrokerClient;
  repo: LifecycleRepository;
  /** The per-user "orders" limiter (the same policy as placing orders). */
  limiter: RateLimiter;
}

function notCancelable(status: string, retryAfterSeconds?: number): Conflict {
  return new Conflict(
    "ORDER_NOT_CANCELABLE",
    status === "pending_confirmation"
      ? "The order's placement is not confirmed yet; it can be canceled once the broker has it."
      : `The order can no longer be canceled: it is ${status}.`,
    retryAfterSeconds,
  );
}

export class OrderCanceler {
  readonly #o: OrderCancelerOptions;

  constructor(opts: OrderCancelerOptions) {
    this.#o = { ...opts };
  }

  /** Cancels the user's order `orderId`; returns its JSON text (see the module's summary). */
  async cancel(c: Context, userId: string, orderId: string): Promise<string> {
    const { broker, repo, limiter } = this.#o;
    const known = limiter.blocked(userId);
    if (known) limiter.apply(c, known);
    const begin = await repo.cancelBegin({
      hitArguments: limiter.hitArguments(userId),
      userId,
      orderId,
      want: CALLS,
    });
    limiter.apply(c, limiter.settle(userId, begin.hit));
    const order = begin.order;
    if (!order) throw new NotFound("No such order.");
    if (order.status === "canceled") return order.json;
    if (TERMINAL.includes(order.status)) throw notCancelable(order.status);
    if (order.brokerOrderId === null) throw notCancelable(order.status, 60);
    if (begin.granted === 0) {
      throw new UpstreamUnavailable("broker", "its request budget is spent", begin.budgetResetMs);
    }

    const id = order.brokerOrderId;
    let used = 1;
    const answer = await broker.cancelOrder(id).catch(unavailable);
    let state: BrokerState | null = null;
    if (begin.granted > 1) {
      used++;
      try {
        const read = await broker.order(id);
        if (read) state = brokerState(read);
      } catch (err) {
        // The cancel itself was answered; without its read-back the order is pending_cancel.
        if (!(err instanceof BrokerUnavailable || err instanceof CircuitOpen)) throw err;
      }
    }
    const change: Change | null = state
      ? { id: orderId, state }
      : answer === "accepted"
      ? { id: orderId, cancelRequested: true }
      : null;
    if (!change) {
      await repo.json(orderId, begin.granted - used);
      throw notCancelable(
        answer === "not_found" ? "unknown to the broker" : "closed at the broker",
      );
    }
    const { changed, unchanged } = await repo.apply([change], {
      giveBack: begin.granted - used,
      unchangedToo: true,
    });
    const row = changed.get(orderId) ?? unchanged.get(orderId);
    if (!row) throw new NotFound("No such order.");
    if (row.status !== "canceled" && (answer !== "accepted" || TERMINAL.includes(row.status))) {
      throw notCancelable(row.status);
    }
    return row.json;
  }
}

/** A broker that cannot say: 503, nothing written. */
function unavailable(err: unknown): never {
  if (err instanceof BrokerUnavailable) {
    throw new UpstreamUnavailable("broker", err.why, err.retryAfterMs, err);
  }
  throw err;
}
