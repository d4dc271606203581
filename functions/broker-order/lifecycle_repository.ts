/**
 * The statements of an order's life after it is placed, each one round trip:
 *
 * - `syncBegin`: the broker-read budget a sync run reserves (shared by every instance, Postgres's
 *   sliding window `internal.rate_limit_take`), every open order to bring up to date, and the
 *   sync's cursor in the broker's feed of fills (internal.broker_fill_cursors).
 * - `apply`: the never-backwards rule, decided in ONE statement. A broker state (an order read)
 *   changes a row only when it is not terminal, its filled quantity does not decrease, and the
 *   broker's answer is newer than the stored one by the broker's `updated_at` (or, for
 *   `not_placed`, the order is still pending and older than the absence window, by the
 *   database's clock). The fills of the feed change a row (found by its broker order id) only
 *   when it is not terminal and they take its filled quantity beyond the stored one, every share
 *   in between accounted for by a fill: `filled_qty` becomes the last fill's `cum_qty`, the
 *   average price the exact weighted average of the stored one and the new shares' prices, the
 *   status the last fill's `order_status`. Whatever order the reads and writes of several
 *   instances arrive in (a fill seen twice, an older read after a newer one), the row lock and
 *   these WHEREs leave the newest state. The same statement moves the feed's cursor on (never
 *   back) and gives back the budget the run did not use.
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
import { type BrokerFill, type BrokerState, OPEN_SQL } from "./broker_state.ts";

/** An open order as the sync sees it. */
export interface OpenOrder {
  id: string;
  clientOrderId: string;
  brokerOrderId: string | null;
  status: string;
  filledQty: string;
  /** The broker's updated_at of the stored state (null before the broker answered). */
  updatedAt: string | null;
  createdAt: string;
}

/** Where the sync stopped reading the feed of fills: its last activity applied. */
export interface FillCursor {
  activityId: string;
  /** The activity's transaction_time. */
  time: string;
}

/** The digits an average price keeps when it does not terminate (rounded half away from zero). */
export const AVG_PRICE_SCALE = 20;

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
    /** The feed's cursor (null before the first fill applied). */
    cursor: FillCursor | null;
  }> {
    const o = this.#o;
    const [row] = await this.#db.query((sql) =>
      sql.unsafe<{ granted: number; reset_ms: number; open: string; cursor: string | null }[]>(
        `select t.granted, t.reset_ms, (select coalesce(json_agg(json_build_object(
            'id', o.id, 'clientOrderId', o.client_order_id, 'brokerOrderId', o.broker_order_id,
            'status', o.status, 'filledQty', trim_scale(o.filled_qty)::text,
            'updatedAt', o.broker_updated_at, 'createdAt', o.created_at) order by o.created_at),
            '[]')::text
          from (select * from public.orders where ${OPEN_SQL}
            order by created_at limit ${v.maxOrders}) o) as open,
          (select json_build_object('activityId', c.activity_id, 'time', c.transaction_time)::text
            from internal.broker_fill_cursors c where c.key = ${literal(o.budgetKey)}) as cursor
        from internal.rate_limit_take(${
          literal(o.budgetKey)
        }, ${o.budgetQuota}, ${o.budgetWindowMs}, ${v.want}) t`,
      ).simple()
    );
    return {
      granted: row.granted,
      resetMs: row.reset_ms,
      open: JSON.parse(row.open),
      cursor: row.cursor === null ? null : JSON.parse(row.cursor),
    };
  }

  /**
   * Applies every change and every fill in one statement (see the module's summary), moves the
   * feed's cursor on to `cursor` (when given) and gives back `giveBack` unused budget units.
   * Returns the rows that changed, as the API shows them, by id (and with `unchangedToo` the
   * requested rows that did not).
   */
  async apply(changes: Change[], v: {
    giveBack: number;
    unchangedToo?: boolean;
    /** Fills of the feed, for orders no change here is about. */
    fills?: BrokerFill[];
    /** The last activity of the feed read: every fill up to it is in `fills` or applied. */
    cursor?: FillCursor;
  }): Promise<{
    changed: Map<string, { status: string; json: string }>;
    /** With `unchangedToo`: the requested rows the statement left as they were. */
    unchanged: Map<string, { status: string; json: string }>;
  }> {
    const o = this.#o;
    const giveBack = `internal.rate_limit_give_back(${literal(o.budgetKey)}, ${v.giveBack})`;
    const fills = v.fills ?? [];
    if (changes.length === 0 && fills.length === 0 && !v.cursor) {
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
    const fillValues = fills.map((f) =>
      `(${lit(f.brokerOrderId, "text")}, ${lit(f.time, "timestamptz")}, ${lit(f.qty, "numeric")}, ${
        lit(f.price, "numeric")
      }, ${lit(f.cumQty, "numeric")}, ${lit(f.orderStatus, "text")})`
    ).join(",\n");
    const none = (columns: string) => `select ${columns} where false`;
    const cursor = v.cursor
      ? `, cursor as (
          insert into internal.broker_fill_cursors as c (key, activity_id, transaction_time)
          values (${literal(o.budgetKey)}, ${literal(v.cursor.activityId)}, ${
        lit(v.cursor.time, "timestamptz")
      })
          on conflict (key) do update set activity_id = excluded.activity_id,
            transaction_time = excluded.transaction_time, updated_at = clock_timestamp()
          where c.activity_id collate "C" < excluded.activity_id collate "C"
          returning 1
        )`
      : "";
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ id: string; status: string; order_json: string; changed: boolean }[]>(
        `with v (id, broker_order_id, status, filled_qty, filled_avg_price, filled_at,
            canceled_at, expired_at, broker_updated_at) as (${
          values ? `values ${values}` : none(
            "null::uuid, null::text, null::text, null::numeric, null::numeric, " +
              "null::timestamptz, null::timestamptz, null::timestamptz, null::timestamptz",
          )
        }),
        f (broker_order_id, transaction_time, qty, price, cum_qty, order_status) as (${
          fillValues ? `values ${fillValues}` : none(
            "null::text, null::timestamptz, null::numeric, null::numeric, " +
              "null::numeric, null::text",
          )
        }),
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
        ),
        -- Each fill's new shares: those beyond the stored filled quantity.
        fo as (
          select o.id, o.filled_qty as q0, o.filled_avg_price as p0, f.transaction_time, f.price,
            f.cum_qty, f.order_status, f.cum_qty - greatest(f.cum_qty - f.qty, o.filled_qty) as got
          from f join public.orders o on o.broker_order_id = f.broker_order_id
          where not internal.order_terminal(o.status) and f.cum_qty > o.filled_qty
            and not exists (select 1 from v where v.id = o.id)
        ),
        -- An order's state after its new fills, computed from the state they were read against
        -- (a row another instance moved on meanwhile is rechecked by the UPDATE's WHERE).
        agg as (
          select id, max(cum_qty) as filled_qty,
            round((coalesce(max(q0 * p0), 0) + sum(price * got))::numeric(80, ${
          AVG_PRICE_SCALE + 4
        }) / max(cum_qty), ${AVG_PRICE_SCALE}) as avg,
            sum(got) = max(cum_qty) - max(q0) and (max(q0) = 0 or bool_and(p0 is not null))
              as whole,
            (array_agg(order_status order by cum_qty desc, transaction_time desc))[1] as status,
            max(transaction_time) as last_at
          from fo group by id
        ),
        filled as (
          update public.orders o set
            status = a.status,
            filled_qty = a.filled_qty,
            filled_avg_price = trim_scale(a.avg),
            filled_at = case when a.status = 'filled' then a.last_at else o.filled_at end,
            broker_updated_at = greatest(o.broker_updated_at, a.last_at),
            updated_at = clock_timestamp()
          from agg a
          where o.id = a.id and a.whole
            and not internal.order_terminal(o.status)
            and a.filled_qty > o.filled_qty
          returning o.id, o.status, internal.order_json(o)::text as order_json
        )${cursor},
        back as (select ${giveBack} as n)
        select c.id, c.status, c.order_json, true as changed
        from back left join (select * from changed union all select * from filled) c on true
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
