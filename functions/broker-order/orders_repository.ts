/**
 * The orders repository: every statement broker-order sends about orders, each one round trip
 * (values as literals, shared/db/sql_literal.ts, since parameters cost postgres.js a Describe round
 * trip without prepared statements).
 *
 * - `record`: the order row (or the update of the row an earlier attempt left pending) and the
 *   settling of its idempotency key, in one call of `internal.order_record` (one transaction).
 * - `list`: a page of a user's orders, newest first, keyset-paginated on (created_at, id) to the
 *   microsecond.
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import type { IdempotencyClaim } from "../../shared/http/idempotency.ts";
 * import type { OrderRequest } from "./order_schema.ts";
 * import { OrdersRepository } from "./orders_repository.ts";
 *
 * declare const db: Database, claim: IdempotencyClaim, order: OrderRequest;
 * const repo = new OrdersRepository(db);
 * const json = await claim.settleWith((where) =>
 *   repo.record(where, {
 *     userId: "6f1c1a3e-0000-4000-8000-000000000001",
 *     clientOrderId: "bo-example",
 *     order,
 *     brokerOrderId: "b-1",
 *     status: "accepted",
 *     rejectReason: null,
 *     settle: { kind: "complete" },
 *   })
 * );
 * const page = await repo.list("6f1c1a3e-0000-4000-8000-000000000001", 20);
 * ```
 */
import type { Database } from "../../shared/db/db.ts";
import type { KeyLocation } from "../../shared/http/idempotency.ts";
import { jsonLiteral, literal } from "../../shared/db/sql_literal.ts";
import { brokerColumns, type BrokerState } from "./broker_state.ts";
import type { Cursor, OrderRequest } from "./order_schema.ts";

/** The order as the API answers it (decimals as text without trailing zeros, times in UTC µs). */
export interface OrderJson {
  id: string;
  clientOrderId: string;
  brokerOrderId: string | null;
  status: string;
  symbol: string;
  side: string;
  type: string;
  qty: string | null;
  notional: string | null;
  limitPrice: string | null;
  stopPrice: string | null;
  timeInForce: string;
  note: string | null;
  /** Decimal text; "0" before a fill. */
  filledQty: string;
  /** Decimal text; null before a fill. */
  filledAvgPrice: string | null;
  filledAt: string | null;
  canceledAt: string | null;
  expiredAt: string | null;
  rejectReason: string | null;
  createdAt: string;
  updatedAt: string;
}

/** What to write: the request, whose it is, and what the broker said. */
export interface OrderRecord {
  userId: string;
  clientOrderId: string;
  order: OrderRequest;
  brokerOrderId: string | null;
  status: string;
  rejectReason: string | null;
  /** What the broker said of the order when it answered (its fills, its updated_at). */
  broker?: BrokerState;
}

/**
 * How the key is settled with the write: completed with the order as its answer (`201`), with
 * another answer (`status`, `body`), or released for the next retry.
 */
export type Settle =
  | { kind: "complete"; status?: number; body?: string }
  | { kind: "release" };

/** The API's shape of a row `o` of `public.orders` (internal.order_json, one definition). */
const COLUMNS = `internal.order_json(o)::text as order_json`;

export class OrdersRepository {
  readonly #db: Database;

  constructor(db: Database) {
    this.#db = db;
  }

  /**
   * Writes the order and settles the key in one round trip; returns the order as JSON text (the
   * exact text stored as the key's answer when it completes with the order). Throws the
   * database's IK409 when the lease was lost (see `IdempotencyClaim.settleWith`).
   */
  async record(where: KeyLocation, v: OrderRecord & { settle: Settle }): Promise<string> {
    const o = v.order;
    const row = {
      id: crypto.randomUUID(),
      user_id: v.userId,
      client_order_id: v.clientOrderId,
      broker_order_id: v.brokerOrderId,
      symbol: o.symbol,
      side: o.side,
      type: o.type,
      qty: o.qty ?? null,
      notional: o.notional ?? null,
      limit_price: o.limit_price ?? null,
      stop_price: o.stop_price ?? null,
      time_in_force: o.time_in_force,
      note: o.note ?? null,
      status: v.status,
      reject_reason: v.rejectReason,
      ...(v.broker ? brokerColumns(v.broker) : {}),
    };
    const s = v.settle;
    const [result] = await this.#db.query((sql) =>
      sql.unsafe<{ order_json: string }[]>(
        `select internal.order_record(${jsonLiteral(row)}, ${literal(s.kind)}, ${
          literal(where.scope)
        }, ${literal(where.owner)}, ${literal(where.key)}, ${literal(where.lease)}::uuid, ${
          literal(s.kind === "complete" ? s.status : null)
        }, ${literal(s.kind === "complete" ? s.body : null)}) as order_json`,
      ).simple() // one Query message (shared/db/sql_literal.ts)
    );
    return result.order_json;
  }

  /** Up to `limit` of the user's orders older than `before`, newest first, as JSON text each. */
  async list(userId: string, limit: number, before?: Cursor): Promise<OrderJson[]> {
    const after = before
      ? `and (created_at, id) < (${literal(before.createdAt)}::timestamptz, ${
        literal(before.id)
      }::uuid)`
      : "";
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ order_json: string }[]>(
        `select ${COLUMNS} from public.orders o
        where user_id = ${literal(userId)}::uuid ${after}
        order by created_at desc, id desc
        limit ${limit}`,
      )
    );
    return rows.map((r) => JSON.parse(r.order_json) as OrderJson);
  }

  /**
   * Whether a resumed attempt that found no order at the broker may send it: no row (the first
   * attempt died before recording it), `not_placed`, or pending for at least `absentSeconds` (by
   * the database's clock). One round trip, on that rare path only.
   */
  async mayResubmit(clientOrderId: string, absentSeconds: number): Promise<boolean> {
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ ok: boolean }[]>(
        `select status = 'not_placed' or (status = 'pending_confirmation'
          and created_at <= clock_timestamp() - make_interval(secs => ${absentSeconds})) as ok
        from public.orders where client_order_id = ${literal(clientOrderId)}`,
      ).simple()
    );
    return rows.length === 0 || rows[0].ok;
  }

  /** The user's order `id` as JSON text, or null (unknown, or another user's): one round trip. */
  async one(userId: string, id: string): Promise<string | null> {
    const rows = await this.#db.query((sql) =>
      sql.unsafe<{ order_json: string }[]>(
        `select ${COLUMNS} from public.orders o
        where id = ${literal(id)}::uuid and user_id = ${literal(userId)}::uuid`,
      ).simple()
    );
    return rows[0]?.order_json ?? null;
  }
}
