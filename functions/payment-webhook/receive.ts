/**
 * payment-webhook's handler: reads the verified event's envelope, plans its effect and records it
 * (effects.ts), and purges old event ids at most once per interval per instance, off the request's
 * path.
 *
 * @example
 * ```ts
 * import type { Hono } from "hono";
 * import type { Platform } from "../../shared/platform/platform.ts";
 * import { receiveEvent } from "./receive.ts";
 * import type { SignedVars } from "./signature.ts";
 *
 * declare const app: Hono<SignedVars>, platform: Platform;
 * app.post("/", receiveEvent(platform));
 * ```
 */
import { housekeeping } from "../../shared/resilience/housekeeping.ts";
import type { Context } from "hono";
import * as z from "../../shared/zod.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { BadRequest } from "../../shared/errors.ts";
import { purgeStripeEvents } from "./event_retention.ts";
import {
  type EventRecord,
  MAX_EPOCH_SECONDS,
  planStripeEvent,
  recordStripeEvent,
} from "./effects.ts";
import type { SignedVars } from "./signature.ts";

/** The envelope fields needed to record an event; the rest is validated per type in effects.ts. */
export const Envelope = z.object({
  id: z.string().min(1).max(255),
  type: z.string().min(1).max(255).catch("(invalid type)"),
  created: z.number().int().positive().max(MAX_EPOCH_SECONDS).nullable().catch(null),
  data: z.object({ object: z.unknown() }).nullable().catch(null),
});

/**
 * What an event records: its envelope read (an id is required; a missing created time or data
 * makes it ignored with the reason) and its effect planned. Null when it has no usable id. The
 * webhook and the catch-up (catch_up.ts) read events through this one function.
 */
export function eventRecord(event: unknown): EventRecord | null {
  const envelope = Envelope.safeParse(event);
  if (!envelope.success) return null;
  const { id, type, created, data } = envelope.data;
  const effect = created === null || data === null
    ? { kind: "ignored" as const, reason: "malformed event: no created time or data" }
    : planStripeEvent({ id, type, created, object: data.object });
  return { id, type, createdAt: created === null ? null : new Date(created * 1000), effect };
}

/** The handler: `200 {"received": true[, "duplicate": true]}`, or 400 for an event with no id. */
export function receiveEvent(platform: Platform) {
  const { db, log, limits } = platform;
  // The first purge falls at a random point of the first interval: instances are short-lived
  // and start together, so across many of them purges happen regularly but not all at once.
  const maybePurge = housekeeping({
    name: "stripe event ids",
    intervalMs: limits.WEBHOOK_PURGE_INTERVAL_SECONDS * 1000,
    run: () =>
      purgeStripeEvents(db, {
        retentionDays: limits.WEBHOOK_RETENTION_DAYS,
        batchSize: limits.WEBHOOK_PURGE_BATCH_SIZE,
      }),
    log,
    background: platform.background,
    now: platform.now,
    firstAtRandom: true,
  });

  return async function receive(c: Context<SignedVars>): Promise<Response> {
    const record = eventRecord(c.get("event"));
    if (!record) throw new BadRequest("The signed event has no id.", "MALFORMED_EVENT");
    const { id, type } = record;
    const result = await recordStripeEvent(db, record);

    maybePurge();
    const requestId = c.get("requestId");
    if (result === "duplicate") {
      log.info("stripe event duplicate", { requestId, eventId: id, type });
      return c.json({ received: true, duplicate: true });
    }
    log.info("stripe event recorded", { requestId, eventId: id, type, ...result });
    return c.json({ received: true });
  };
}
