/**
 * The order sync (`POST /broker-order/sync`, every minute from the schedule): brings every open
 * order up to date with the broker and resolves every `pending_confirmation` order by its
 * client_order_id, never by resubmitting.
 *
 * Its broker reads grow with the number of changes, not with the number of open orders:
 * - the feed of fills, `GET /v2/account/activities/FILL` (100 a page, oldest first from the
 *   cursor kept in Postgres: the last activity applied), carries every fill since the last run,
 *   so N new fills cost about N/100 reads;
 * - one `GET /v2/orders?status=open` (500 a page), read after the feed, carries the state of
 *   every order still open, partial fills included;
 * - only an order that left that list WITHOUT a final fill in the feed (canceled, expired,
 *   rejected, replaced, or filled after the feed was read) is read on its own
 *   (`GET /v2/orders/{id}`), and each pending order is looked up once.
 * A quiet run over hundreds of open orders is two broker reads. An order read (the list, one
 * order, a lookup) is the broker's whole state of the order, newer than the feed read before it:
 * it wins over that order's fills. Every other fill goes to the statement that writes the run's
 * changes, which applies it by the order's broker id (never backwards, exact average price) and
 * moves the cursor past it in the same statement; a fill that changes nothing (seen before, or
 * older than the stored state) is harmless. Without a cursor, or one older than the oldest open
 * order, the feed is read from the oldest open order's creation (less ORDER_SYNC_FILLS_SKEW_SECONDS).
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
import { type BrokerFill, brokerFill, brokerState, differs } from "./broker_state.ts";
import type { Change, FillCursor, LifecycleRepository } from "./lifecycle_repository.ts";
import { PENDING } from "./place_order.ts";

/** What a run did (the answer's body). */
export interface SyncResult {
  /** Open orders looked at (placed, and pending confirmation). */
  open: number;
  pending: number;
  /** Calls made to the broker. */
  brokerReads: number;
  /** Fills read from the broker's feed. */
  fills: number;
  /** Orders whose state changed. */
  changed: number;
  /** Pending orders the broker provably never got. */
  notPlaced: number;
  /** Broker order objects (or fills) skipped because a field was malformed (left for a later run). */
  unreadable: number;
  /** Why the run stopped before it was done, or null. */
  stopped: null | "broker_rate_budget";
}

export interface OrderSyncOptions {
  broker: BrokerClient;
  repo: LifecycleRepository;
  limits: Pick<
    Limits,
    | "ORDER_SYNC_BROKER_READS_MAX"
    | "ORDER_SYNC_MAX_ORDERS"
    | "ORDER_SYNC_PAGE_SIZE"
    | "ORDER_SYNC_FILLS_PAGE_SIZE"
    | "ORDER_SYNC_FILLS_SKEW_SECONDS"
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
    /** The feed's fills read this run, by activity id (a page may repeat one), and its last. */
    const fills = new Map<string, BrokerFill>();
    let cursor: FillCursor | undefined;
    /** Broker order ids whose state this run read whole (their fills are in it). */
    const wholeRead = new Set<string>();
    try {
      if (placed.length > 0) {
        // 1. The feed, from the cursor (or from the oldest open order when the cursor is older).
        const oldest = Date.parse(placed[0].createdAt) - l.ORDER_SYNC_FILLS_SKEW_SECONDS * 1000;
        let pageToken = begin.cursor && Date.parse(begin.cursor.time) >= oldest
          ? begin.cursor.activityId
          : undefined;
        const after = pageToken ? undefined : new Date(oldest).toISOString().slice(0, 19) + "Z";
        for (;;) {
          const page = await read(() =>
            broker.fills({ pageSize: l.ORDER_SYNC_FILLS_PAGE_SIZE, pageToken, after })
          );
          for (const a of page) {
            let time = cursor?.time ?? begin.cursor?.time ?? after!;
            try {
              const f = brokerFill(a);
              fills.set(f.id, f);
              time = f.time;
            } catch (err) {
              if (!(err instanceof BrokerUnavailable)) throw err;
              // Skipped: its order is read whole once it leaves the open list without a fill.
              unreadable++;
            }
            cursor = { activityId: a.id, time };
          }
          const last = page.at(-1);
          if (page.length < l.ORDER_SYNC_FILLS_PAGE_SIZE || !last) break;
          pageToken = last.id;
        }
        // Orders the feed saw fill completely (no read needed once off the open list).
        const done = new Set<string>();
        for (const f of fills.values()) if (f.orderStatus === "filled") done.add(f.brokerOrderId);

        // 2. The open orders: newer than the feed.
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
        for (const b of atBroker.values()) wholeRead.add(b.id);
        // (Alpaca's `until` is exclusive: an order sharing the last one's submission time that
        // did not fit on the page is not on the next either, and is read on its own below.)
        // 3. Orders that left the list without a final fill in the feed, one by one.
        for (const o of placed) {
          let b = atBroker.get(o.brokerOrderId!);
          if (!b) {
            if (done.has(o.brokerOrderId!)) continue; // its fills say it all
            // Not open any more, no final fill seen: closed since the last run, read on its own.
            b = await read(() => broker.order(o.brokerOrderId!)) ?? undefined;
            wholeRead.add(o.brokerOrderId!);
          }
          if (!b) continue;
          const state = readable(b);
          if (state && differs(state, o)) changes.push({ id: o.id, state });
        }
      }
      for (const o of pending) {
        const found = await read(() => broker.orderByClientOrderId(o.clientOrderId));
        if (!found) changes.push({ id: o.id, notPlaced: true });
        else {
          wholeRead.add(found.id);
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
    // Every fill read goes to the statement (or is covered by a whole read of its order), so the
    // cursor moves past nothing unapplied.
    const toApply = [...fills.values()].filter((f) => !wholeRead.has(f.brokerOrderId));
    const { changed } = await repo.apply(changes, { giveBack: left, fills: toApply, cursor });
    let notPlaced = 0;
    for (const c of changed.values()) if (c.status === "not_placed") notPlaced++;
    return {
      open: placed.length + pending.length,
      pending: pending.length,
      brokerReads: reads,
      fills: fills.size,
      changed: changed.size,
      notPlaced,
      unreadable,
      stopped,
    };
  }
}
