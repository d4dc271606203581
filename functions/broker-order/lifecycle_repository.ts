/**
 * The statements of an order's life after it is placed, each one round trip:
 *
 * - `syncBegin`: the broker-read budget a sync run reserves (shared by every instance, Postgres's
 *   sliding window `internal.rate_limit_take`) and every open order to bring up to date.
 * - `apply`: the never-backwards rule, decided in ONE `update … from (values …)`: a row changes
 *   only when it is not terminal, its filled quantity does not decrease, and the broker's answer
 *   is newer than the stored one by the broker's `updated_at` (or, for `not_placed`, the order is
 *   still pending and older than the absence window, by the database's clock). Whatever order the
 *   reads and writes of several instances arrive in, the row lock and this WHERE leave the newest
 *   state. The same statement gives back the budget the run did not use.
 * - `cancelBegin`: the caller's rate-limit hit, their order, and the budget for its cancel.
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { LifecycleRepository } from "./lifecycle_repository.ts";
 *
 * declare const db: Database;
 * const repo = new LifecycleRepository(db, {
 *   budgetKey: "broker-api:account",
 *   budgetQuota: 200,
 *   budgetWindowMs: 60_000,
 *   absentAfterSeconds: 120,
 * });
 * const { granted, open } = await repo.syncBegin({ want: 50, maxOrders: 5_000 });
 * const { changed } = await repo.apply([], { giveBack: granted });
 * ```
 */
import type { Database } from "../../shared/db/db.ts";
import { literal } from "../../shared/db/sql_literal.ts";
import { type BrokerState, OPEN_SQL } from "./broker_state.ts";

/** An open order as the sync sees it. */
export interface OpenOrder {
  id: string;
  clientOrderId: string;
  brokerOrderId: string | null;
  status: string;
  filledQty: string;
  /** The broker's updated_at of the stored state (null before the broker answered). */
  updatedAt: string | null;
}

/** One change to apply: the broker's state of an order, or its provable absence. */
export type Change =
  | { id: string; state: BrokerState }
  | { id: string; notPlaced: true }
  /** Our own cancel request was accepted, its outcome not read back. */
  | { id: string; cancelRequested: true };

export interface LifecycleOptions {
  /** The rate-limit key of the broker's request budget (e.g. "broker-api:account"). */
  budgetKey: string;
  budgetQuota: number;
  budgetWindowMs: number;
  /** A pending order whose lookup finds nothing becomes not_placed once this old. */
  absentAfterSeconds: number;
}

/** What `cancelBegin` answers. */
export interface CancelBegin {
  hit: { allowed: boolean; remaining: number; reset_ms: number };
  order: { status: string; brokerOrderId: string | null; json: string } | null;
  /** Broker calls the cancel may make (0: budget spent, or no call needed). */
  granted: number;
  budgetResetMs: number;
}

const lit = (v: string | null, type: string) => `${literal(v)}::${type}`;

export class LifecycleRepository {
  readonly #db: Database;
  readonly #o: LifecycleOptions;

  constructor(db: Database, opts: LifecycleOptions) {
    this.#db = db;
    this.#o = { ...opts };
  }

  /** Reserves up to `want` broker reads and reads up to `maxOrders` open orders, oldest first. */
  async syncBegin(v: { want: number; maxOrders: number }): Promise<{
    granted: number;
    resetMs: number;
    open: OpenOrder[];
  }> {
    const o = this.#o;
    const [row] = await this.#db.query((sql) =>
      sql.unsafe<{ granted: number; reset_ms: number; open: string }[]>(
        `select t.granted, t.reset_ms, (select coalesce(json_agg(json_build_object(
            'id', o.id, 'clientOrderId', o.client_order_id, 'brokerOrderId', o.broker_order_id,
            'status', o.status, 'filledQty', trim_scale(o.filled_qty)::text,
            'updatedAt', o.broker_updated_at) order by o.created_at), '[]')::text
          from (select * from public.orders where ${OPEN_SQL}
            order by created_at limit ${v.maxOrders}) o) as open
        from internal.rate_limit_take(${
          literal(o.budgetKey)
        }, ${o.budgetQuota}, ${o.budgetWindowMs}, ${v.want}) t`,
      ).simple()
    );
    return { granted: row.granted, resetMs: row.reset_ms, open: JSON.parse(row.open) };
  }

  /**
   * Applies every change in one statement (see the module's summary) and gives back `giveBack`
   * unused budget units. Returns the rows that changed, as the API shows them, by id (and with
   * `unchangedToo` the requested rows that did not).
   */
  async apply(changes: Change[], v: { giveBack: number; unchangedToo?: boolean }): Promise<{
    changed: Map<string, { status: string; json: string }>;
    /** With `unchangedToo`: the requested rows the statement left as they were. */
    unchanged: Map<string, { status: string; json: string }>;
  }> {
    const o = this.#o;
    const giveBack = `internal.rate_limit_give_back(${literal(o.budgetKey)}, ${v.giveBack})`;
    if (changes.length === 0) {
      if (v.giveBack > 0) await this.#db.query((sql) => sql.unsafe(`select ${giveBack}`).simple());
      return { changed: new Map(), unchanged: new Map() };
    }
    const values = changes.map((c) => {
      const s = "state" in c ? c.state : null;
      const status = s ? s.status : "notPlaced" in c ? "not_placed" : "pending_cancel";
      return `(${lit(c.id, "uuid")}, ${lit(s?.brokerOrderId ?? null, "text")}, ${
        lit(status, "text")
      }, ${lit(s?.filledQty ?? null, "numeric")}, ${lit(s?.filledAvgPrice ?? null, "numeric")}, ${
        lit(s?.filledAt ?? null, "timestamptz")
      }, ${lit(s?.canceledAt ?? null, "timestamptz")}, ${
        lit(s?.expiredAt ?? null, "timestamptz")
      }, ${lit(s?.updatedAt ?? null, "timestamptz")})`;
    }).join(",\n");
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ id: string; status: string; order_json: string; changed: boolean }[]>(
        `with v (id, broker_order_id, status, filled_qty, filled_avg_price, filled_at,
            canceled_at, expired_at, broker_updated_at) as (values ${values}),
        changed as (
          update public.orders o set
            broker_order_id = coalesce(o.broker_order_id, v.broker_order_id),
            status = v.status,
            filled_qty = coalesce(v.filled_qty, o.filled_qty),
            filled_avg_price = coalesce(v.filled_avg_price, o.filled_avg_price),
            filled_at = coalesce(v.filled_at, o.filled_at),
            canceled_at = coalesce(v.canceled_at, o.canceled_at),
            expired_at = coalesce(v.expired_at, o.expired_at),
            broker_updated_at = coalesce(v.broker_updated_at, o.broker_updated_at),
            updated_at = clock_timestamp()
          from v
          where o.id = v.id
            and not internal.order_terminal(o.status)
            and coalesce(v.filled_qty, o.filled_qty) >= o.filled_qty
            and case
              when v.status = 'not_placed' then o.status = 'pending_confirmation'
                and o.broker_order_id is null
                and o.created_at <= clock_timestamp() - make_interval(secs => ${o.absentAfterSeconds})
              when v.broker_updated_at is null then v.status = 'pending_cancel'
                and o.broker_order_id is not null and o.status <> 'pending_cancel'
              else o.broker_updated_at is null or v.broker_updated_at > o.broker_updated_at
            end
          returning o.id, o.status, internal.order_json(o)::text as order_json
        ), back as (select ${giveBack} as n)
        select c.id, c.status, c.order_json, true as changed from back left join changed c on true
        where c.id is not null
        ${
          v.unchangedToo
            ? `union all select o.id, o.status, internal.order_json(o)::text, false
        from public.orders o join v on o.id = v.id where o.id not in (select id from changed)`
            : ""
        }`,
      ).simple()
    );
    const changed = new Map<string, { status: string; json: string }>();
    const unchanged = new Map<string, { status: string; json: string }>();
    for (const r of rows) {
      (r.changed ? changed : unchanged).set(r.id, { status: r.status, json: r.order_json });
    }
    return { changed, unchanged };
  }

  /** Step 1 of a cancel (internal.order_cancel_begin): one round trip. */
  async cancelBegin(v: {
    hitArguments: string;
    userId: string;
    orderId: string;
    want: number;
  }): Promise<CancelBegin> {
    const o = this.#o;
    const [r] = await this.#db.query((sql) =>
      sql.unsafe<
        {
          allowed: boolean;
          remaining: number;
          reset_ms: number;
          order_found: boolean;
          status: string | null;
          broker_order_id: string | null;
          order_json: string | null;
          granted: number;
          budget_reset_ms: number | null;
        }[]
      >(
        `select * from internal.order_cancel_begin(${v.hitArguments}, ${
          literal(o.budgetKey)
        }, ${o.budgetQuota}, ${o.budgetWindowMs}, ${v.want}, ${lit(v.userId, "uuid")}, ${
          lit(v.orderId, "uuid")
        })`,
      ).simple()
    );
    return {
      hit: { allowed: r.allowed, remaining: r.remaining, reset_ms: r.reset_ms },
      order: r.order_found
        ? { status: r.status!, brokerOrderId: r.broker_order_id, json: r.order_json! }
        : null,
      granted: r.granted,
      budgetResetMs: r.budget_reset_ms ?? 0,
    };
  }

  /** The order `id` as the API shows it (after a cancel changed nothing): one round trip. */
  async json(id: string, giveBack: number): Promise<string | null> {
    const o = this.#o;
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ order_json: string }[]>(
        `select internal.order_json(o)::text as order_json,
          internal.rate_limit_give_back(${literal(o.budgetKey)}, ${giveBack}) as n
        from public.orders o where o.id = ${lit(id, "uuid")}`,
      ).simple()
    );
    return rows[0]?.order_json ?? null;
  }
}
