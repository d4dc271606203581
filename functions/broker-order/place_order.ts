/**
 * Placing an order at most once: what is sent to the broker, what became of it, and what is
 * written and answered for each outcome.
 *
 * The order goes to the broker with a `client_order_id` derived from user and key, so the broker
 * itself refuses a second one.
 * - Placed: `201` with the order; the order row and the key's completion commit in one statement.
 * - Rejected by the broker (4xx): `422 ORDER_REJECTED` with its reason, stored as the key's answer.
 * - Answer lost (deadline, dropped connection, 5xx): the order is looked up by client_order_id
 *   before anything else. Found: as placed. Still unknown: stored as `pending_confirmation`,
 *   answered `202`, and the key is released (not completed): the next retry with the key resumes
 *   by looking the order up, never by sending it blindly again. A lookup that finds nothing lets
 *   the retry send it only once the stored order is `not_placed` (the sync's verdict) or has been
 *   absent for ORDER_ABSENT_AFTER_SECONDS; before that the retry answers `202` again.
 * - Broker unavailable or breaker open: `503` with `Retry-After`; nothing was placed.
 *
 * The broker call runs between the claim and the write, outside any transaction.
 *
 * @example
 * ```ts
 * import type { IdempotencyClaim } from "../../shared/http/idempotency.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 * import type { Logger } from "../../shared/logger.ts";
 * import type { BrokerClient } from "./broker_client.ts";
 * import type { OrderRequest } from "./order_schema.ts";
 * import type { OrdersRepository } from "./orders_repository.ts";
 * import { OrderPlacer } from "./place_order.ts";
 *
 * declare const broker: BrokerClient, orders: OrdersRepository, log: Logger;
 * declare const claim: IdempotencyClaim, order: OrderRequest;
 * const placer = new OrderPlacer({ broker, orders, log, limits: parseLimits({}) });
 * const answer = await placer.place({ claim, order, userId: "u-1", requestId: "r-1" });
 * answer.status; // 201, 202 or 422
 * ```
 */
import {
  CircuitOpen,
  errorParts,
  Unprocessable,
  UpstreamUnavailable,
} from "../../shared/errors.ts";
import type { IdempotencyClaim } from "../../shared/http/idempotency.ts";
import type { Limits } from "../../shared/limits.ts";
import { sha256 } from "../../shared/sha256.ts";
import type { Logger } from "../../shared/logger.ts";
import { toPlainText } from "../../shared/sanitize.ts";
import { toPostgresText } from "../../shared/db/sql_literal.ts";
import {
  type BrokerClient,
  type BrokerOrder,
  BrokerOutcomeUnknown,
  BrokerRejected,
  BrokerUnavailable,
} from "./broker_client.ts";
import { type BrokerState, brokerState } from "./broker_state.ts";
import type { OrderRequest } from "./order_schema.ts";
import type { OrderRecord, OrdersRepository } from "./orders_repository.ts";

/** What a stored order answers while the broker has not confirmed it. */
export const PENDING = "pending_confirmation";

/**
 * The broker's `client_order_id` for a key (at most 48 characters, Alpaca's limit): "bo-" and the
 * base64url sha-256 of user, key and the key's lifetime id, so every attempt with the key sends
 * the same id, and a key used again after it expired names a new order.
 */
export async function clientOrderIdFor(
  userId: string,
  key: string,
  keyId: string,
): Promise<string> {
  return `bo-${await sha256(`${userId}\n${key}\n${keyId}`, "base64url")}`;
}

export type Outcome =
  | { kind: "placed"; order: BrokerOrder }
  | { kind: "rejected"; reason: string }
  | { kind: "unknown"; why: string };

/** Sends the order at most once and says what became of it (see the module's summary). */
export async function submit(
  broker: BrokerClient,
  resuming: boolean,
  order: OrderRequest,
  clientOrderId: string,
  /**
   * Asked when a resumed attempt finds no order at the broker: whether it may send it now (the
   * stored order is `not_placed`, or was never stored, or has been absent long enough). Default:
   * yes.
   */
  mayResubmit: () => Promise<boolean> = () => Promise.resolve(true),
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

  if (resuming) {
    // An earlier attempt may have sent it: ask the broker before anything else. (An open
    // breaker throws CircuitOpen here: 503, nothing done.)
    const found = await lookUp();
    if (found) return found;
    if (!(await mayResubmit())) {
      return { kind: "unknown", why: "not yet provably absent at the broker" };
    }
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

/** The answer to send: status, JSON body text and extra headers. */
export interface Answer {
  status: 201 | 202 | 422;
  body: string;
  headers: Record<string, string>;
}

export interface OrderPlacerOptions {
  broker: BrokerClient;
  orders: OrdersRepository;
  log: Logger;
  limits: Pick<
    Limits,
    "IDEMPOTENCY_LOCK_SECONDS" | "BROKER_TIMEOUT_MS" | "ORDER_ABSENT_AFTER_SECONDS"
  >;
}

/** Places orders: submit, then one statement that writes the outcome and settles the key. */
export class OrderPlacer {
  readonly #o: OrderPlacerOptions;

  constructor(opts: OrderPlacerOptions) {
    this.#o = { ...opts };
    const { IDEMPOTENCY_LOCK_SECONDS: lockSeconds, BROKER_TIMEOUT_MS: brokerTimeoutMs } =
      opts.limits;
    if (lockSeconds * 1000 <= 2 * brokerTimeoutMs) {
      // Still safe (the broker refuses a second client_order_id, the lease stops a late
      // completion), but a slow attempt would be taken over while it still waits on the broker.
      opts.log.warn("IDEMPOTENCY_LOCK_SECONDS is shorter than an order's two broker calls", {
        lockSeconds,
        brokerTimeoutMs,
      });
    }
  }

  /** Places `order` for `userId` under `claim`; throws 503 errors as `submit` does. */
  async place(v: {
    claim: IdempotencyClaim;
    order: OrderRequest;
    userId: string;
    requestId: string;
  }): Promise<Answer> {
    const { claim, order, userId } = v;
    const clientOrderId = await clientOrderIdFor(userId, claim.key, claim.keyId);
    const outcome = await submit(
      this.#o.broker,
      claim.resuming,
      order,
      clientOrderId,
      () => this.#o.orders.mayResubmit(clientOrderId, this.#o.limits.ORDER_ABSENT_AFTER_SECONDS),
    );
    const base = { userId, clientOrderId, order };
    const json = { "content-type": "application/json; charset=utf-8" };
    const record = (
      r: Omit<OrderRecord, keyof typeof base>,
      settle: Parameters<
        OrdersRepository["record"]
      >[1]["settle"],
    ) => claim.settleWith((where) => this.#o.orders.record(where, { ...base, ...r, settle }));

    if (outcome.kind === "placed") {
      let broker: BrokerState | undefined;
      try {
        broker = brokerState(outcome.order);
      } catch {
        broker = undefined; // placed all the same: the sync reads its state later
      }
      const body = await record(
        {
          brokerOrderId: outcome.order.id,
          status: outcome.order.status,
          rejectReason: null,
          broker,
        },
        { kind: "complete" },
      );
      return { status: 201, body, headers: json };
    }

    if (outcome.kind === "rejected") {
      const reason = toPostgresText(await toPlainText(outcome.reason)) || "no reason given";
      const err = new Unprocessable("ORDER_REJECTED", `The broker rejected the order: ${reason}.`);
      const { status, headers, body } = errorParts(err, v.requestId);
      await record(
        { brokerOrderId: null, status: "rejected", rejectReason: reason },
        { kind: "complete", status, body },
      );
      return { status: 422, body, headers };
    }

    // Unknown: recorded as pending, and the key handed to the next retry, which looks it up.
    this.#o.log.warn("order outcome unknown; stored pending confirmation", {
      requestId: v.requestId,
      clientOrderId,
      why: outcome.why,
    });
    const body = await record(
      { brokerOrderId: null, status: PENDING, rejectReason: null },
      { kind: "release" },
    );
    return { status: 202, body, headers: { ...json, "retry-after": "1" } };
  }
}
