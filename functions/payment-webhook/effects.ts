/**
 * What each Stripe event does to `purchases` and `subscriptions`, run inside the transaction that
 * records the event. Every field used is validated with zod first: a correctly signed but
 * malformed event is ignored with the reason (acknowledged, so Stripe does not retry it for
 * three days), never a 500.
 *
 * Stripe does not guarantee the order of events (https://docs.stripe.com/webhooks#event-ordering):
 * each row keeps the `created` time and a rank of the event its state came from, and an event
 * only writes when (created, rank) is not older than what is stored. The rank decides between
 * events created in the same second (Stripe's timestamps are whole seconds).
 *
 * Object shapes follow the current API (2025-03-31.basil and later: `items.data[].current_period_end`
 * on subscriptions, `parent.subscription_details.subscription` on invoices) and still accept the
 * older top-level fields, since a webhook endpoint can be pinned to an older API version.
 *
 * @example
 * const outcome = await applyStripeEvent(tx, event); // { outcome: "applied" } | { outcome: "ignored", reason }
 */
import { z } from "zod";
import type { Tx } from "../../shared/db.ts";
import type { EventOutcome } from "../../shared/webhook_dedup.ts";

/** The event envelope fields used to apply it (the rest of Stripe's envelope is not read). */
export interface StripeEventInput {
  id: string;
  type: string;
  /** event.created, seconds since the epoch. */
  created: number;
  /** event.data.object, not yet validated. */
  object: unknown;
}

/** Event types with an effect; any other type is recorded and acknowledged. */
export const HANDLED_TYPES = [
  "checkout.session.completed",
  "payment_intent.succeeded",
  "payment_intent.payment_failed",
  "charge.refunded",
  "customer.subscription.created",
  "customer.subscription.updated",
  "customer.subscription.deleted",
  "invoice.paid",
  "invoice.payment_failed",
] as const;

type Handled = typeof HANDLED_TYPES[number];

/** Applies the event's effect in `tx`, or says why it has none. Throws only database errors. */
export function applyStripeEvent(tx: Tx, event: StripeEventInput): Promise<EventOutcome> {
  if (!(HANDLED_TYPES as readonly string[]).includes(event.type)) {
    return Promise.resolve(ignored(`unhandled event type ${event.type}`));
  }
  const at = new Date(event.created * 1000);
  switch (event.type as Handled) {
    case "checkout.session.completed":
      return parsed(CheckoutSession, event, (s) => checkoutCompleted(tx, s, at));
    case "payment_intent.succeeded":
      return parsed(PaymentIntent, event, (pi) => setPurchaseStatus(tx, pi.id, "paid", at));
    case "payment_intent.payment_failed":
      return parsed(PaymentIntent, event, (pi) => setPurchaseStatus(tx, pi.id, "failed", at));
    case "charge.refunded":
      return parsed(Charge, event, (charge) => {
        if (!charge.payment_intent) return ignored("the charge names no payment_intent");
        // charge.refunded fires for partial refunds too; `refunded` is true once fully refunded.
        const status = charge.refunded ? "refunded" : "partially_refunded";
        return setPurchaseStatus(tx, charge.payment_intent, status, at);
      });
    case "customer.subscription.created":
    case "customer.subscription.updated":
    case "customer.subscription.deleted":
      return parsed(Subscription, event, (sub) => {
        const state = {
          id: sub.id,
          customer: sub.customer,
          status: sub.status,
          currentPeriodEnd: subscriptionPeriodEnd(sub),
          metadataUser: userIdIn(sub.metadata),
          at,
          rank: event.type === "customer.subscription.deleted" ? RANK.deleted : RANK.subscription,
        };
        return upsertSubscription(tx, state);
      });
    case "invoice.paid":
    case "invoice.payment_failed":
      return parsed(Invoice, event, (invoice) => {
        const subscription = invoice.parent?.subscription_details?.subscription ??
          invoice.subscription;
        if (!subscription) return ignored("the invoice belongs to no subscription");
        const paid = event.type === "invoice.paid";
        const ends = (invoice.lines?.data ?? []).map((line) => line.period.end);
        return upsertSubscription(tx, {
          id: subscription,
          customer: invoice.customer ?? null,
          // Stripe moves a subscription to past_due when a renewal payment fails and back to
          // active once its invoice is paid (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses).
          status: paid ? "active" : "past_due",
          currentPeriodEnd: paid && ends.length ? new Date(Math.max(...ends) * 1000) : null,
          metadataUser: userIdIn(invoice.parent?.subscription_details?.metadata),
          at,
          rank: RANK.invoice,
        });
      });
  }
}

// ---- validation -------------------------------------------------------------------------------

const stripeId = z.string().min(1).max(255);
/** An expandable reference: the id, or the expanded object carrying it. */
const ref = z.union([stripeId, z.object({ id: stripeId })]).transform((v) =>
  typeof v === "string" ? v : v.id
);
const metadata = z.record(z.string(), z.string()).nullish();
/** Supabase user ids are uuids; any 8-4-4-4-12 hex string fits Postgres' uuid type. */
const userId = z.guid();
const timestamp = z.number().int().nonnegative();

const CheckoutSession = z.object({
  id: stripeId,
  client_reference_id: z.string().nullish(),
  metadata,
  payment_intent: ref.nullish(),
  customer: ref.nullish(),
  amount_total: z.number().int().nullish(),
  currency: z.string().max(10).nullish(),
  payment_status: z.enum(["paid", "unpaid", "no_payment_required"]),
});

const PaymentIntent = z.object({ id: stripeId });

const Charge = z.object({
  id: stripeId,
  payment_intent: ref.nullish(),
  refunded: z.boolean(),
});

const Subscription = z.object({
  id: stripeId,
  customer: ref,
  status: z.enum([
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
  ]),
  metadata,
  // Before 2025-03-31.basil the period was on the subscription itself.
  current_period_end: timestamp.nullish(),
  items: z.object({
    data: z.array(z.object({ current_period_end: timestamp.nullish() })),
  }).nullish(),
});

const Invoice = z.object({
  id: stripeId,
  customer: ref.nullish(),
  // Before 2025-03-31.basil; since then under parent.subscription_details.
  subscription: ref.nullish(),
  parent: z.object({
    subscription_details: z.object({ subscription: ref, metadata }).nullish(),
  }).nullish(),
  lines: z.object({
    data: z.array(z.object({ period: z.object({ end: timestamp }) })),
  }).nullish(),
});

/** Runs `effect` on the validated object, or ignores the event naming the first bad field. */
async function parsed<S extends z.ZodType>(
  schema: S,
  event: StripeEventInput,
  effect: (value: z.infer<S>) => EventOutcome | Promise<EventOutcome>,
): Promise<EventOutcome> {
  const result = schema.safeParse(event.object);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = ["data", "object", ...issue.path.map(String)].join(".");
    return ignored(`malformed ${event.type}: ${path}: ${issue.message}`);
  }
  return await effect(result.data);
}

function ignored(reason: string): EventOutcome {
  return { outcome: "ignored", reason };
}

const APPLIED: EventOutcome = { outcome: "applied" };

function userIdIn(meta: Record<string, string> | null | undefined): string | null {
  const parsed = userId.safeParse(meta?.user_id);
  return parsed.success ? parsed.data : null;
}

/** The latest period end among the items (current API), else the legacy top-level field. */
function subscriptionPeriodEnd(sub: z.infer<typeof Subscription>): Date | null {
  const ends = (sub.items?.data ?? []).map((i) => i.current_period_end)
    .filter((e): e is number => typeof e === "number");
  const end = ends.length ? Math.max(...ends) : sub.current_period_end;
  return typeof end === "number" ? new Date(end * 1000) : null;
}

// ---- purchases --------------------------------------------------------------------------------

type PurchaseStatus = "pending" | "failed" | "paid" | "partially_refunded" | "refunded";

/** Between events of the same second, the later stage of a payment wins. */
const PURCHASE_RANK: Record<PurchaseStatus, number> = {
  pending: 0,
  failed: 1,
  paid: 2,
  partially_refunded: 3,
  refunded: 4,
};

async function checkoutCompleted(
  tx: Tx,
  s: z.infer<typeof CheckoutSession>,
  at: Date,
): Promise<EventOutcome> {
  // The user is whoever our checkout page named (https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-client_reference_id).
  const fromReference = userId.safeParse(s.client_reference_id);
  const user = fromReference.success ? fromReference.data : userIdIn(s.metadata);
  if (!user) {
    return ignored("no user: neither client_reference_id nor metadata.user_id is a user id");
  }
  const status: PurchaseStatus = s.payment_status === "unpaid" ? "pending" : "paid";
  const rank = PURCHASE_RANK[status];
  const rows = await tx`
    insert into public.purchases as p (user_id, stripe_checkout_session_id, stripe_payment_intent_id,
      stripe_customer_id, amount_total, currency, status, stripe_state_at, stripe_state_rank)
    values (${user}, ${s.id}, ${s.payment_intent ?? null}, ${s.customer ?? null},
      ${s.amount_total ?? null}, ${s.currency ?? null}, ${status}, ${at}, ${rank})
    on conflict (stripe_checkout_session_id) do update set
      status = excluded.status, stripe_state_at = excluded.stripe_state_at,
      stripe_state_rank = excluded.stripe_state_rank, updated_at = now()
    where (p.stripe_state_at, p.stripe_state_rank) <= (excluded.stripe_state_at, excluded.stripe_state_rank)
    returning p.id`;
  if (s.customer) {
    // A Stripe customer belongs to the user who first checked out with it.
    await tx`
      insert into internal.stripe_customers (customer_id, user_id) values (${s.customer}, ${user})
      on conflict (customer_id) do nothing`;
  }
  return rows.length ? APPLIED : ignored("a newer event already set this purchase's state");
}

async function setPurchaseStatus(
  tx: Tx,
  paymentIntent: string,
  status: PurchaseStatus,
  at: Date,
): Promise<EventOutcome> {
  const rank = PURCHASE_RANK[status];
  const updated = await tx`
    update public.purchases p set status = ${status}, stripe_state_at = ${at},
      stripe_state_rank = ${rank}, updated_at = now()
    where p.stripe_payment_intent_id = ${paymentIntent}
      and (p.stripe_state_at, p.stripe_state_rank) <= (${at}::timestamptz, ${rank}::smallint)
    returning p.id`;
  if (updated.length) return APPLIED;
  const found = await tx`
    select 1 from public.purchases where stripe_payment_intent_id = ${paymentIntent}`;
  return found.length
    ? ignored("a newer event already set this purchase's state")
    : ignored(`no purchase for payment_intent ${paymentIntent}`);
}

// ---- subscriptions ----------------------------------------------------------------------------

/** Between events of the same second: a deletion wins over an update, which wins over an invoice. */
const RANK = { invoice: 1, subscription: 2, deleted: 3 } as const;

interface SubscriptionState {
  id: string;
  customer: string | null;
  status: string;
  /** Null keeps the stored one. */
  currentPeriodEnd: Date | null;
  metadataUser: string | null;
  at: Date;
  rank: number;
}

async function upsertSubscription(tx: Tx, s: SubscriptionState): Promise<EventOutcome> {
  // The user: the subscription's own metadata (set through Checkout's subscription_data.metadata),
  // else the row we already have, else whoever checked out as this customer.
  const [owner] = await tx<{ user_id: string | null }[]>`
    select coalesce(
      ${s.metadataUser}::uuid,
      (select user_id from public.subscriptions where stripe_subscription_id = ${s.id}),
      (select user_id from internal.stripe_customers where customer_id = ${s.customer})
    ) as user_id`;
  if (!owner.user_id) {
    return ignored(`no user for subscription ${s.id} (customer ${s.customer ?? "unknown"})`);
  }
  const rows = await tx`
    insert into public.subscriptions as s (stripe_subscription_id, user_id, stripe_customer_id,
      status, current_period_end, stripe_state_at, stripe_state_rank)
    values (${s.id}, ${owner.user_id}, ${s.customer}, ${s.status}, ${s.currentPeriodEnd},
      ${s.at}, ${s.rank})
    on conflict (stripe_subscription_id) do update set
      status = excluded.status,
      current_period_end = coalesce(excluded.current_period_end, s.current_period_end),
      stripe_customer_id = coalesce(s.stripe_customer_id, excluded.stripe_customer_id),
      stripe_state_at = excluded.stripe_state_at, stripe_state_rank = excluded.stripe_state_rank,
      updated_at = now()
    where (s.stripe_state_at, s.stripe_state_rank) <= (excluded.stripe_state_at, excluded.stripe_state_rank)
    returning s.stripe_subscription_id`;
  return rows.length ? APPLIED : ignored("a newer event already set this subscription's state");
}
