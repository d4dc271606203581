/**
 * payment-webhook: Stripe → us. The signature guard verifies `Stripe-Signature` against the raw
 * body (signature.ts); the handler then claims the event, applies its effect and records it in
 * one transaction (receive.ts, effects.ts), so each event id takes effect exactly once however
 * often, however concurrently and on however many instances it is delivered.
 *
 * Answers: `200 {"received":true}` (applied, or recorded as ignored: unknown type, no user,
 * malformed object), `200 {"received":true,"duplicate":true}` for an id already committed,
 * `400 INVALID_SIGNATURE` (nothing recorded), `503` with `Retry-After` when the database is
 * unavailable (nothing written; Stripe retries for three days:
 * https://docs.stripe.com/webhooks#retries).
 */
import * as z from "../../shared/zod.ts";
import { defineFunction } from "../../shared/app.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { route } from "../../shared/methods.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { stripeHmac } from "./hmac.ts";
import { receiveEvent } from "./receive.ts";
import { type SignedEnv, stripeSignature, stripeSignatureHeader } from "./signature.ts";

/**
 * `STRIPE_WEBHOOK_SECRET`: one or more signing secrets, comma-separated. While a secret is being
 * rolled, Stripe signs with both (https://docs.stripe.com/webhooks#roll-endpoint-secrets).
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

const paymentWebhook = defineFunction<typeof Env, SignedEnv>({
  name: "payment-webhook",
  env: Env,
  browser: false,
  build(app, ctx) {
    route(app, "/", {
      POST: [
        // What the caller check can tell without the body first (the header and its time),
        // then the body's bound, then the signature over the body.
        stripeSignatureHeader({
          toleranceSeconds: ctx.limits.WEBHOOK_TOLERANCE_SECONDS,
          now: ctx.now,
          log: ctx.log,
        }),
        bodyLimit(ctx.limits.WEBHOOK_BODY_LIMIT_BYTES),
        stripeSignature({
          secrets: ctx.config.STRIPE_WEBHOOK_SECRET,
          toleranceSeconds: ctx.limits.WEBHOOK_TOLERANCE_SECONDS,
          // node:crypto's HMAC: a third of the Web Crypto provider's cost per delivery (hmac.ts).
          crypto: stripeHmac(),
          now: ctx.now,
          log: ctx.log,
        }),
        receiveEvent(ctx),
      ],
    });
  },
});

export default paymentWebhook;

if (import.meta.main) await serveStandalone(paymentWebhook);
