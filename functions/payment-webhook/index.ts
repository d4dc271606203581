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
 *
 * `POST /catch-up` (service callers: the schedule, an operator after an incident) reads back from
 * Stripe's `GET /v1/events` what never arrived and applies it the same way (catch_up.ts):
 * `200 {applied, ignored, alreadyApplied, read, pages, hasMore, cursorSaved, cursor}`, `503` or
 * `502` with `Retry-After` when Stripe's API fails (nothing changed).
 */
import { purgeAfter } from "../../shared/resilience/housekeeping.ts";
import { stripeEventRetention } from "./event_retention.ts";
import * as z from "../../shared/zod.ts";
import { defineFunction } from "../../shared/platform/app.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/http/body_limit.ts";
import { route } from "../../shared/http/route.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { httpUrl } from "../../shared/env.ts";
import { requireJwt } from "../../shared/auth/jwt.ts";
import { stripeHmac } from "./hmac.ts";
import { catchUpRoute } from "./catch_up.ts";
import { receiveEvent } from "./receive.ts";
import { type SignedVars, stripeSignature, stripeSignatureHeader } from "./signature.ts";
import { STRIPE_UPSTREAM, stripeEvents } from "./stripe_api.ts";

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

/**
 * `STRIPE_API_URL`: where Stripe's API is, `scheme://host[:port]` (the library takes a host, a
 * port and a protocol; a path would be silently dropped, so it is refused).
 */
const stripeApiUrl = httpUrl.pipe(
  z.string().refine((v) => /^https?:\/\/[^/?#]+$/.test(v), "must be scheme://host[:port]"),
).transform((v) => new URL(v));

const Env = BaseEnv.extend({
  STRIPE_SECRET_KEY: z.string().regex(/^(sk|rk)_(test|live)_\S+$/, "must start with sk_ or rk_"),
  STRIPE_WEBHOOK_SECRET: webhookSecrets,
  STRIPE_API_URL: stripeApiUrl.default(new URL("https://api.stripe.com")),
});

const paymentWebhook = defineFunction<typeof Env, SignedVars>({
  name: "payment-webhook",
  env: Env,
  browser: false,
  build(app, ctx) {
    // Old event ids are purged after webhooks and after each scheduled catch-up (so on pg_cron's
    // schedule too, when no webhook arrives).
    const retention = stripeEventRetention(ctx);
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
        purgeAfter(retention),
        receiveEvent(ctx),
      ],
    });
    const events = stripeEvents({
      apiUrl: ctx.config.STRIPE_API_URL,
      secretKey: ctx.config.STRIPE_SECRET_KEY,
      timeoutMs: ctx.limits.STRIPE_TIMEOUT_MS,
      breaker: ctx.breakers.get(STRIPE_UPSTREAM),
      fetch: ctx.fetch,
    });
    route(app, "/catch-up", {
      POST: [
        requireJwt<SignedVars>({ tokens: ctx.tokens, role: "service_role" }),
        purgeAfter(retention),
        catchUpRoute({ ...ctx, events }),
      ],
    });
  },
});

export default paymentWebhook;

if (import.meta.main) await serveStandalone(paymentWebhook);
