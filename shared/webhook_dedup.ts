/**
 * Webhook event de-duplication: each event id takes effect once, across every instance, because
 * the record of the id and the event's effect commit in one transaction. Generic over the
 * provider: it needs only a table of this shape (Stripe's is `internal.stripe_events`):
 *
 *   id text primary key, type text not null, event_created timestamptz,
 *   received_at timestamptz not null default now(),
 *   outcome text check (outcome in ('applied', 'ignored')), reason text
 *
 * Concurrent deliveries of one id: the second `claim` blocks on the first transaction's
 * uncommitted primary key, then conflicts (the first committed: a duplicate) or inserts (the
 * first rolled back: this one applies the event). Nothing in this process remembers ids.
 *
 * @example
 * ```ts
 * import type { Database } from "./db.ts";
 * import { webhookDedup } from "./webhook_dedup.ts";
 *
 * declare const db: Database;
 * const dedup = webhookDedup({ table: "internal.stripe_events" });
 * const event = { id: "evt_1", type: "invoice.paid", createdAt: new Date() };
 * const result = await db.transaction(async (tx) => {
 *   if (!await dedup.claim(tx, event)) return "duplicate";
 *   // … the event's effect, in `tx` …
 *   await dedup.record(tx, event.id, { outcome: "applied" });
 *   return "applied";
 * });
 * ```
 */
import type { Database, Tx } from "./db.ts";
import { clip } from "./text.ts";

/** What became of an event: applied, or acknowledged without effect and why. */
export type EventOutcome = { outcome: "applied" } | { outcome: "ignored"; reason: string };

/** The event as the dedup table records it. */
export interface ClaimedEvent {
  id: string;
  type: string;
  /** When the provider created the event; null when the event did not say. */
  createdAt: Date | null;
}

export interface WebhookDedupOptions {
  /** Schema-qualified table of the shape above, e.g. "internal.stripe_events". */
  table: string;
}

export interface PurgeOptions {
  /** Ids received longer ago than this are deleted. */
  retentionDays: number;
  /** Rows per delete statement: small, so no statement holds locks for long. Default 500. */
  batchSize?: number;
  /** At most this many batches per call, so one call is bounded in time. Default 20. */
  maxBatches?: number;
}

export interface WebhookDedup {
  /**
   * Records `event.id` inside `tx`. True: this transaction owns the event and must apply it;
   * false: a committed transaction already did. Waits while another transaction holds the id.
   */
  claim(tx: Tx, event: ClaimedEvent): Promise<boolean>;
  /** Records the outcome of a claimed event, in the same transaction. */
  record(tx: Tx, id: string, outcome: EventOutcome): Promise<void>;
  /**
   * Deletes ids older than the retention in small batches; returns how many. Safe from any
   * number of instances at once: each batch skips rows another purge has locked.
   */
  purge(db: Database, opts: PurgeOptions): Promise<number>;
}

const TABLE_NAME = /^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/;
/** Longest reason stored: reasons are ours, but may quote a malformed event's field. */
const REASON_MAX = 500;

/** The de-duplication helpers for one table. Throws at start-up on a malformed table name. */
export function webhookDedup(opts: WebhookDedupOptions): WebhookDedup {
  if (!TABLE_NAME.test(opts.table)) {
    throw new Error(`Webhook dedup table must be schema.table in lower case, got ${opts.table}`);
  }
  const table = opts.table;
  return {
    async claim(tx, event) {
      const rows = await tx`
        insert into ${tx(table)} (id, type, event_created)
        values (${event.id}, ${event.type}, ${event.createdAt})
        on conflict (id) do nothing
        returning id`;
      return rows.length === 1;
    },

    async record(tx, id, outcome) {
      const reason = outcome.outcome === "ignored" ? clip(outcome.reason, REASON_MAX) : null;
      const rows = await tx`
        update ${tx(table)} set outcome = ${outcome.outcome}, reason = ${reason}
        where id = ${id}
        returning id`;
      if (rows.length !== 1) throw new Error(`Event ${id} was not claimed in this transaction`);
    },

    async purge(db, { retentionDays, batchSize = 500, maxBatches = 20 }) {
      if (!(retentionDays > 0 && batchSize > 0 && maxBatches > 0)) {
        throw new Error("Purge needs a positive retention, batch size and batch count");
      }
      let total = 0;
      for (let batch = 0; batch < maxBatches; batch++) {
        const [{ deleted }] = await db.query((sql) =>
          sql<{ deleted: number }[]>`
            with doomed as (
              select id from ${sql(table)}
              where received_at < now() - make_interval(days => ${retentionDays})
              order by received_at
              limit ${batchSize}
              for update skip locked
            ), gone as (
              delete from ${sql(table)} t using doomed where t.id = doomed.id returning 1
            )
            select count(*)::int as deleted from gone`
        );
        total += deleted;
        if (deleted < batchSize) break;
      }
      return total;
    },
  };
}
