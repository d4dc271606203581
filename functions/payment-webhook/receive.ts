/**
 * payment-webhook's handler: reads the verified event's envelope, plans its effect and records it
 * (effects.ts). Old event ids are purged by event_retention.ts, after this route and the catch-up.
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
import type { Context } from "hono";
import * as z from "../../shared/zod.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { BadRequest } from "../../shared/errors.ts";
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
  const { db, log } = platform;
  return async function receive(c: Context<SignedVars>): Promise<Response> {
    const record = eventRecord(c.get("event"));
    if (!record) throw new BadRequest("The signed event has no id.", "MALFORMED_EVENT");
    const { id, type } = record;
    const result = await recordStripeEvent(db, record);

    const requestId = c.get("requestId");
    if (result === "duplicate") {
      log.info("stripe event duplicate", { requestId, eventId: id, type });
      return c.json({ received: true, duplicate: true });
    }
    log.info("stripe event recorded", { requestId, eventId: id, type, ...result });
    return c.json({ received: true });
  };
}
