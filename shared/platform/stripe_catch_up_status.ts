/**
 * What `status` shows operators of payment-webhook's Stripe catch-up
 * (functions/payment-webhook/catch_up.ts), in one statement: its last checkpoint (a run that finds
 * nothing new writes nothing, so this is the last run that changed something), how far its cursor
 * lags, and the events it recorded in the last day. Any such event is a webhook that never
 * arrived: `missedWebhooks` says so in words (the run that recorded them also alerted operators).
 *
 * @example
 * ```ts
 * import type { Database } from "../db/db.ts";
 * import { stripeCatchUpStatus } from "./stripe_catch_up_status.ts";
 *
 * declare const db: Database;
 * const { lagSeconds, caughtUpLastDay } = await stripeCatchUpStatus(db);
 * ```
 */
import type { Database } from "../db/db.ts";

/** The catch-up as `status` shows it. */
export interface StripeCatchUpStatus {
  /** Whether a run ever wrote its cursor. */
  started: boolean;
  /** When a run last wrote its cursor (ISO). */
  lastCheckpointAt: string | null;
  /** Everything Stripe created up to this time is recorded (ISO). */
  coveredUntil: string | null;
  /** Seconds between `coveredUntil` and now. */
  lagSeconds: number | null;
  /** A scan stopped at a run's bound, continued by the next run. */
  scanInProgress: boolean;
  /** Events recorded by the catch-up in the last 24 hours, and of those applied with effect. */
  caughtUpLastDay: number;
  appliedLastDay: number;
  /** When the catch-up last recorded an event (ISO). */
  lastCaughtUpAt: string | null;
  /** Present when the catch-up recorded anything in the last day. */
  missedWebhooks?: string;
}

/** The catch-up's state; throws DatabaseUnavailable when the database is down. */
export async function stripeCatchUpStatus(db: Database): Promise<StripeCatchUpStatus> {
  const [row] = await db.query((sql) =>
    sql<{
      checkpoint_at: Date | null;
      covered_until: Date | null;
      lag: number | null;
      scanning: boolean | null;
      caught_up: number;
      applied: number;
      last_caught_up: Date | null;
    }[]>`
      select c.checkpoint_at, c.covered_until,
        floor(extract(epoch from now() - c.covered_until))::int as lag,
        c.scan_from is not null as scanning, e.caught_up, e.applied, e.last_caught_up
      from (select count(*)::int as caught_up,
              (count(*) filter (where outcome = 'applied'))::int as applied,
              max(received_at) as last_caught_up
            from internal.stripe_events
            where via = 'catch-up' and received_at > now() - interval '1 day') e
      left join internal.stripe_catch_up c on c.id`
  );
  const iso = (d: Date | null) => d?.toISOString() ?? null;
  const status: StripeCatchUpStatus = {
    started: row.checkpoint_at !== null,
    lastCheckpointAt: iso(row.checkpoint_at),
    coveredUntil: iso(row.covered_until),
    lagSeconds: row.lag === null ? null : Math.max(0, row.lag),
    scanInProgress: row.scanning ?? false,
    caughtUpLastDay: row.caught_up,
    appliedLastDay: row.applied,
    lastCaughtUpAt: iso(row.last_caught_up),
  };
  if (row.caught_up > 0) {
    status.missedWebhooks = `${row.caught_up} Stripe event(s) in the last 24 h reached us only ` +
      "through the catch-up: their webhooks were missed. Check the endpoint in Stripe's dashboard.";
  }
  return status;
}
