/**
 * payment-webhook: Stripe → us. The signature guard verifies `Stripe-Signature` against the raw
 * body (signature.ts); the handler then claims the event, applies its effect and records it in
 * one transaction (effects.ts), so each event id takes effect exactly once however often,
 * however concurrently and on however many instances it is delivered.
 *
 * Answers: `200 {"received":true}` (applied, or recorded as ignored: unknown type, no user,
 * malformed object), `200 {"received":true,"duplicate":true}` for an id already committed,
 * `400 INVALID_SIGNATURE` (nothing recorded), `503` with `Retry-After` when the database is
 * unavailable (nothing written; Stripe retries for three days:
 * https://docs.stripe.com/webhooks#retries).
 */
import type { Context, Hono } from "hono";
import Stripe from "stripe";
import { z } from "zod";
import { defineFunction } from "../../shared/app.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { BadRequest } from "../../shared/errors.ts";
import { route } from "../../shared/methods.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { webhookDedup } from "../../shared/webhook_dedup.ts";
import { MAX_EPOCH_SECONDS, planStripeEvent, recordStripeEvent } from "./effects.ts";
import { type SignedEnv, stripeSignature } from "./signature.ts";

/**
 * `STRIPE_WEBHOOK_SECRET`: one or more signing secrets, comma-separated. While a secret is being
 * rolled, Stripe signs with both the old and the new one
 * (https://docs.stripe.com/webhooks#roll-endpoint-secrets); accepting a list lets us switch
 * without dropping events.
 */
const webhookSecrets = z.string().transform((value, ctx) => {
  const list = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (list.length === 0 || !list.every((s) => /^whsec_\S+$/.test(s))) {
    ctx.addIssue({ code: "custom", message: "must be whsec_ secrets, comma-separated" });
    return z.NEVER;
  }
  return list;
});

const Env = BaseEnv.extend({
  STRIPE_SECRET_KEY: z.string().regex(/^(sk|rk)_(test|live)_\S+$/, "must start with sk_ or rk_"),
  STRIPE_WEBHOOK_SECRET: webhookSecrets,
});

/** The envelope fields needed to record an event; the rest is validated per type in effects.ts. */
const Envelope = z.object({
  id: z.string().min(1).max(255),
  type: z.string().min(1).max(255).catch("(invalid type)"),
  created: z.number().int().positive().max(MAX_EPOCH_SECONDS).nullable().catch(null),
  data: z.object({ object: z.unknown() }).nullable().catch(null),
});

const paymentWebhook = defineFunction({
  name: "payment-webhook",
  env: Env,
  browser: false,
  build(base, { limits, db, log, config, ...ctx }) {
    const app = base as unknown as Hono<SignedEnv>; // the same app, with the guard's variable
    const dedup = webhookDedup({ table: "internal.stripe_events" });
    // The first purge falls at a random point of the first interval: instances are short-lived
    // and start together, so across many of them purges happen regularly but not all at once.
    const purgeIntervalMs = limits.WEBHOOK_PURGE_INTERVAL_SECONDS * 1000;
    let lastPurge = ctx.now() - Math.random() * purgeIntervalMs;

    /** Purges old event ids at most once per interval per instance, off the request's path. */
    function maybePurge() {
      const now = ctx.now();
      if (now - lastPurge < purgeIntervalMs) return;
      lastPurge = now;
      ctx.background(
        dedup.purge(db, {
          retentionDays: limits.WEBHOOK_RETENTION_DAYS,
          batchSize: limits.WEBHOOK_PURGE_BATCH_SIZE,
        }).then((purged) => {
          if (purged) log.info("old stripe event ids purged", { purged });
        }),
      );
    }

    route(app, "/", {
      POST: [
        bodyLimit(limits.WEBHOOK_BODY_LIMIT_BYTES),
        stripeSignature({
          secrets: config.STRIPE_WEBHOOK_SECRET,
          toleranceSeconds: limits.WEBHOOK_TOLERANCE_SECONDS,
          // Web Crypto, so it runs on the Edge Runtime (https://docs.stripe.com/webhooks/quickstart?lang=node, Deno example).
          crypto: Stripe.createSubtleCryptoProvider(),
          now: ctx.now,
          log,
        }),
        async function receive(c: Context<SignedEnv>) {
          const envelope = Envelope.safeParse(c.var.event);
          if (!envelope.success) {
            throw new BadRequest("The signed event has no id.", "MALFORMED_EVENT");
          }
          const { id, type, created, data } = envelope.data;
          const effect = created === null || data === null
            ? { kind: "ignored" as const, reason: "malformed event: no created time or data" }
            : planStripeEvent({ id, type, created, object: data.object });
          const createdAt = created === null ? null : new Date(created * 1000);
          const result = await recordStripeEvent(db, { id, type, createdAt, effect });

          maybePurge();
          const requestId = c.var.requestId;
          if (result === "duplicate") {
            log.info("stripe event duplicate", { requestId, eventId: id, type });
            return c.json({ received: true, duplicate: true });
          }
          log.info("stripe event recorded", { requestId, eventId: id, type, ...result });
          return c.json({ received: true });
        },
      ],
    });
  },
});

export default paymentWebhook;

if (import.meta.main) await serveStandalone(paymentWebhook);
