/**
 * How long payment-webhook remembers Stripe event ids: `internal.stripe_events` keeps each id for
 * WEBHOOK_RETENTION_DAYS (Stripe retries for three days; events can be re-sent by hand for 30),
 * then the purge deletes it in small batches, each skipping rows another instance's purge holds,
 * so any number of instances can purge at once and no statement holds locks for long.
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { purgeStripeEvents } from "./event_retention.ts";
 *
 * declare const db: Database;
 * const purged = await purgeStripeEvents(db, { retentionDays: 30, batchSize: 500 });
 * ```
 */
import type { Database } from "../../shared/db/db.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { housekeeping } from "../../shared/resilience/housekeeping.ts";

/**
 * The purge on its schedule (at most every WEBHOOK_PURGE_INTERVAL_SECONDS per instance, in
 * batches of WEBHOOK_PURGE_BATCH_SIZE): call the returned function after each webhook and each
 * catch-up run. The first purge falls at a random point of the first interval: instances are
 * short-lived and start together, so across many of them purges happen regularly, not at once.
 */
export function stripeEventRetention(
  p: Pick<Platform, "db" | "limits" | "log" | "background" | "now">,
): () => void {
  return housekeeping({
    name: "stripe event ids",
    intervalMs: p.limits.WEBHOOK_PURGE_INTERVAL_SECONDS * 1000,
    run: () =>
      purgeStripeEvents(p.db, {
        retentionDays: p.limits.WEBHOOK_RETENTION_DAYS,
        batchSize: p.limits.WEBHOOK_PURGE_BATCH_SIZE,
      }),
    log: p.log,
    background: p.background,
    now: p.now,
    firstAtRandom: true,
  });
}

export interface PurgeOptions {
  /** Ids received longer ago than this are deleted. */
  retentionDays: number;
  /** Rows per delete statement. */
  batchSize: number;
  /** At most this many batches per call, so one call is bounded in time. Default 20. */
  maxBatches?: number;
}

/** Deletes event ids older than the retention, batch by batch; returns how many. */
export async function purgeStripeEvents(
  db: Database,
  { retentionDays, batchSize, maxBatches = 20 }: PurgeOptions,
): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < maxBatches; batch++) {
    const [{ deleted }] = await db.query((sql) =>
      sql<{ deleted: number }[]>`
        with doomed as (
          select id from internal.stripe_events
          where received_at < now() - make_interval(days => ${retentionDays})
          order by received_at
          limit ${batchSize}
          for update skip locked
        ), gone as (
          delete from internal.stripe_events t using doomed where t.id = doomed.id returning 1
        )
        select count(*)::int as deleted from gone`
    );
    total += deleted;
    if (deleted < batchSize) break;
  }
  return total;
}
