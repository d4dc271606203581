/**
 * Stripe events for the payment-webhook tests and benchmark: envelopes and objects shaped like
 * Stripe's real payloads (API 2025-03-31.basil and later, trimmed of fields the function does not
 * read), signed with the real `stripe` library as Stripe signs them.
 *
 * @example
 * const event = checkoutCompleted({ userId });
 * const res = await server.call("payment-webhook", await delivery(event, SECRET));
 */
import Stripe from "stripe";

export const SECRET = "whsec_test_secret_for_payment_webhook_tests_0001";
export const OTHER_SECRET = "whsec_test_rotated_secret_for_payment_webhook_0002";
export const STRIPE_KEY = "sk_test_payment_webhook_tests";

const stripe = new Stripe(STRIPE_KEY, { httpClient: Stripe.createFetchHttpClient() });
const cryptoProvider = Stripe.createSubtleCryptoProvider();

/** The variables payment-webhook needs beyond testEnv's. */
export const webhookEnv = (secrets = SECRET) => ({
  STRIPE_SECRET_KEY: STRIPE_KEY,
  STRIPE_WEBHOOK_SECRET: secrets,
});

/** A Stripe-style id: prefix and 24 random alphanumerics. */
export function stripeId(prefix: string): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `${prefix}_${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

export interface StripeEvent {
  id: string;
  object: "event";
  api_version: string;
  created: number;
  data: { object: Record<string, unknown>; previous_attributes?: Record<string, unknown> };
  livemode: boolean;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  type: string;
}

/** The event envelope Stripe posts (https://docs.stripe.com/api/events/object). */
export function envelope(
  type: string,
  object: Record<string, unknown>,
  opts: { id?: string; created?: number } = {},
): StripeEvent {
  return {
    id: opts.id ?? stripeId("evt"),
    object: "event",
    api_version: "2026-10-28.endive",
    created: opts.created ?? nowSeconds(),
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  };
}

/** `checkout.session.completed` (https://docs.stripe.com/api/checkout/sessions/object). */
export function checkoutCompleted(opts: {
  userId?: string | null;
  metadataUserId?: string;
  sessionId?: string;
  paymentIntent?: string;
  customer?: string;
  amountTotal?: number;
  paymentStatus?: "paid" | "unpaid" | "no_payment_required";
  created?: number;
  id?: string;
} = {}): StripeEvent {
  const created = opts.created ?? nowSeconds();
  return envelope("checkout.session.completed", {
    id: opts.sessionId ?? stripeId("cs_test"),
    object: "checkout.session",
    amount_subtotal: opts.amountTotal ?? 4900,
    amount_total: opts.amountTotal ?? 4900,
    cancel_url: "https://example.com/cancel",
    client_reference_id: opts.userId === undefined ? crypto.randomUUID() : opts.userId,
    created: created - 30,
    currency: "usd",
    customer: opts.customer ?? stripeId("cus"),
    customer_details: { email: "buyer@example.com", name: "Test Buyer", tax_exempt: "none" },
    expires_at: created + 86_370,
    invoice: null,
    livemode: false,
    metadata: opts.metadataUserId ? { user_id: opts.metadataUserId } : {},
    mode: "payment",
    payment_intent: opts.paymentIntent ?? stripeId("pi"),
    payment_method_types: ["card"],
    payment_status: opts.paymentStatus ?? "paid",
    status: "complete",
    subscription: null,
    success_url: "https://example.com/success",
  }, { created, id: opts.id });
}

/** `payment_intent.succeeded` / `payment_intent.payment_failed`. */
export function paymentIntentEvent(
  type: "payment_intent.succeeded" | "payment_intent.payment_failed",
  paymentIntent: string,
  opts: { created?: number; customer?: string } = {},
): StripeEvent {
  const succeeded = type === "payment_intent.succeeded";
  return envelope(type, {
    id: paymentIntent,
    object: "payment_intent",
    amount: 4900,
    amount_received: succeeded ? 4900 : 0,
    currency: "usd",
    customer: opts.customer ?? null,
    last_payment_error: succeeded ? null : {
      code: "card_declined",
      decline_code: "generic_decline",
      type: "card_error",
    },
    latest_charge: stripeId("ch"),
    livemode: false,
    metadata: {},
    status: succeeded ? "succeeded" : "requires_payment_method",
  }, { created: opts.created });
}

/** `charge.refunded` (https://docs.stripe.com/api/charges/object). */
export function chargeRefunded(
  paymentIntent: string | null,
  opts: { created?: number; amountRefunded?: number } = {},
): StripeEvent {
  const refunded = opts.amountRefunded ?? 4900;
  return envelope("charge.refunded", {
    id: stripeId("ch"),
    object: "charge",
    amount: 4900,
    amount_captured: 4900,
    amount_refunded: refunded,
    captured: true,
    currency: "usd",
    paid: true,
    payment_intent: paymentIntent,
    refunded: refunded >= 4900,
    status: "succeeded",
  }, { created: opts.created });
}

/** `customer.subscription.*`: the period is on the items since 2025-03-31.basil. */
export function subscriptionEvent(
  type: "created" | "updated" | "deleted",
  opts: {
    subscription: string;
    customer: string;
    status: string;
    periodEnd: number;
    userId?: string;
    created?: number;
  },
): StripeEvent {
  return envelope(`customer.subscription.${type}`, {
    id: opts.subscription,
    object: "subscription",
    cancel_at_period_end: false,
    canceled_at: opts.status === "canceled" ? opts.created ?? nowSeconds() : null,
    collection_method: "charge_automatically",
    created: (opts.created ?? nowSeconds()) - 3600,
    currency: "usd",
    customer: opts.customer,
    items: {
      object: "list",
      data: [{
        id: stripeId("si"),
        object: "subscription_item",
        current_period_end: opts.periodEnd,
        current_period_start: opts.periodEnd - 30 * 86400,
        price: { id: stripeId("price"), object: "price", unit_amount: 1900, currency: "usd" },
        quantity: 1,
        subscription: opts.subscription,
      }],
      has_more: false,
    },
    livemode: false,
    metadata: opts.userId ? { user_id: opts.userId } : {},
    status: opts.status,
  }, { created: opts.created });
}

/** `invoice.paid` / `invoice.payment_failed`: the subscription is under `parent` since basil. */
export function invoiceEvent(
  type: "invoice.paid" | "invoice.payment_failed",
  opts: { subscription: string; customer: string; periodEnd: number; created?: number },
): StripeEvent {
  return envelope(type, {
    id: stripeId("in"),
    object: "invoice",
    amount_due: 1900,
    amount_paid: type === "invoice.paid" ? 1900 : 0,
    billing_reason: "subscription_cycle",
    currency: "usd",
    customer: opts.customer,
    lines: {
      object: "list",
      data: [{
        id: stripeId("il"),
        object: "line_item",
        amount: 1900,
        period: { start: opts.periodEnd - 30 * 86400, end: opts.periodEnd },
      }],
      has_more: false,
    },
    parent: {
      type: "subscription_details",
      subscription_details: { metadata: {}, subscription: opts.subscription },
    },
    status: type === "invoice.paid" ? "paid" : "open",
  }, { created: opts.created });
}

/** A signed POST as Stripe sends it: the raw JSON body and its `Stripe-Signature`. */
export async function delivery(
  event: unknown,
  secret = SECRET,
  opts: { timestamp?: number; body?: string } = {},
): Promise<RequestInit> {
  const payload = opts.body ?? JSON.stringify(event, null, 2);
  const signature = await stripe.webhooks.generateTestHeaderStringAsync({
    payload,
    secret,
    timestamp: opts.timestamp,
    cryptoProvider,
  });
  return {
    method: "POST",
    headers: {
      "content-type": "application/json; charset=utf-8",
      "stripe-signature": signature,
      "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    },
    body: payload,
  };
}
