/**
 * The order sync (`POST /broker-order/sync`, every minute from the schedule): brings every open
 * order up to date with the broker and resolves every `pending_confirmation` order by its
 * client_order_id, never by resubmitting.
 *
 * Its broker reads grow with the number of changes, not with the number of open orders: one
 * `GET /v2/orders?status=open` (500 a page) carries the state of every order still open, partial
 * fills included; only an order that left that list (filled, canceled, expired since the last
 * run) is read on its own (`GET /v2/orders/{id}`), and each pending order is looked up once. A
 * quiet run over hundreds of open orders is one broker read.
 *
 * Database: two round trips whatever the number of orders (reserve the budget and read the open
 * orders; apply every change in one statement and give back the unused budget). The budget is
 * Postgres's sliding window shared by every instance (BROKER_API_RATE_LIMIT a minute): a run
 * reserves at most ORDER_SYNC_BROKER_READS_MAX reads and stops early, saying so
 * (`stopped: "broker_rate_budget"`), when they are spent. A broker failure (or an open breaker)
 * changes no order: `503` with `Retry-After` (an operator reads the fail-safe as every other
 * dependency failure is reported), the reads not made given back, the work left to the next run.
 *
 * @example
 * ```ts
 * import { parseLimits } from "../../shared/limits.ts";
 * import type { BrokerClient } from "./broker_client.ts";
 * import type { LifecycleRepository } from "./lifecycle_repository.ts";
 * import { OrderSync } from "./sync.ts";
 *
 * declare const broker: BrokerClient, repo: LifecycleRepository;
 * const sync = new OrderSync({ broker, repo, limits: parseLimits({}) });
 * const result = await sync.run();
 * result.changed; // orders whose state moved on
 * ```
 */
import { UpstreamUnavailable } from "../../shared/errors.ts";
import type { Limits } from "../../shared/limits.ts";
import { type BrokerClient, type BrokerOrder, BrokerUnavailable } from "./broker_client.ts";
import { brokerState, differs } from "./broker_state.ts";
import type { Change, LifecycleRepository } from "./lifecycle_repository.ts";
import { PENDING } from "./place_order.ts";

/** What a run did (the answer's body). */
export interface SyncResult {
  /** Open orders looked at (placed, and pending confirmation). */
  open: number;
  pending: number;
  /** Calls made to the broker. */
  brokerReads: number;
  /** Orders whose state changed. */
  changed: number;
  /** Pending orders the broker provably never got. */
  notPlaced: number;
  /** Broker order objects skipped because a field was malformed (left for a later run). */
  unreadable: number;
  /** Why the run stopped before it was done, or null. */
  stopped: null | "broker_rate_budget";
}

export interface OrderSyncOptions {
  broker: BrokerClient;
  repo: LifecycleRepository;
  limits: Pick<
    Limits,
    "ORDER_SYNC_BROKER_READS_MAX" | "ORDER_SYNC_MAX_ORDERS" | "ORDER_SYNC_PAGE_SIZE"
  >;
}

/** The run's reservation of broker reads is spent. */
class BudgetSpent extends Error {}

/** One sync run at a time per call; several instances at once are safe (see lifecycle_repository.ts). */
export class OrderSync {
  readonly #o: OrderSyncOptions;

  constructor(opts: OrderSyncOptions) {
    this.#o = { ...opts };
  }

  /** Runs once; throws UpstreamUnavailable or CircuitOpen (503) when the broker fails. */
  async run(): Promise<SyncResult> {
    const { broker, repo, limits: l } = this.#o;
    const begin = await repo.syncBegin({
      want: l.ORDER_SYNC_BROKER_READS_MAX,
      maxOrders: l.ORDER_SYNC_MAX_ORDERS,
    });
    let left = begin.granted;
    let reads = 0;
    const read = async <T>(call: () => Promise<T>): Promise<T> => {
      if (left === 0) throw new BudgetSpent();
      left--;
      reads++;
      return await call();
    };
    const placed = begin.open.filter((o) => o.brokerOrderId !== null);
    const pending = begin.open.filter((o) => o.brokerOrderId === null && o.status === PENDING);
    const changes: Change[] = [];
    let stopped: SyncResult["stopped"] = null;
    let unreadable = 0;
    /** One malformed order object is skipped (and counted), never a reason to fail the run. */
    const readable = (b: BrokerOrder) => {
      try {
        return brokerState(b);
      } catch (err) {
        if (!(err instanceof BrokerUnavailable)) throw err;
        unreadable++;
        return null;
      }
    };
    try {
      if (placed.length > 0) {
        const atBroker = new Map<string, BrokerOrder>();
        let until: string | undefined;
        for (;;) {
          const page = await read(() =>
            broker.openOrders({ limit: l.ORDER_SYNC_PAGE_SIZE, until })
          );
          for (const b of page) atBroker.set(b.id, b);
          const last = page.at(-1);
          const next = last?.submitted_at ?? last?.created_at ?? undefined;
          if (page.length < l.ORDER_SYNC_PAGE_SIZE || !next || next === until) break;
          until = next;
        }
        // (Alpaca's `until` is exclusive: an order sharing the last one's submission time that
        // did not fit on the page is not on the next either, and is read on its own below.)
        for (const o of placed) {
          const open = atBroker.get(o.brokerOrderId!);
          // Not open any more: closed since the last run (a change), read on its own.
          const b = open ?? await read(() => broker.order(o.brokerOrderId!));
          if (!b) continue;
          const state = readable(b);
          if (state && differs(state, o)) changes.push({ id: o.id, state });
        }
      }
      for (const o of pending) {
        const found = await read(() => broker.orderByClientOrderId(o.clientOrderId));
        if (!found) changes.push({ id: o.id, notPlaced: true });
        else {
          const state = readable(found);
          if (state) changes.push({ id: o.id, state });
        }
      }
    } catch (err) {
      if (!(err instanceof BudgetSpent)) {
        // Nothing is written; only the reads not made go back to the shared budget.
        await repo.apply([], { giveBack: left });
        if (err instanceof BrokerUnavailable) {
          throw new UpstreamUnavailable("broker", err.why, err.retryAfterMs, err);
        }
        throw err; // CircuitOpen (503), or a bug
      }
      stopped = "broker_rate_budget";
    }
    const { changed } = await repo.apply(changes, { giveBack: left });
    let notPlaced = 0;
    for (const c of changed.values()) if (c.status === "not_placed") notPlaced++;
    return {
      open: placed.length + pending.length,
      pending: pending.length,
      brokerReads: reads,
      changed: changed.size,
      notPlaced,
      unreadable,
      stopped,
    };
  }
}
