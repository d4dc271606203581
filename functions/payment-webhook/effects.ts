/**
 * What each Stripe event does to `purchases` and `subscriptions`, and the one call that records
 * it. Every field used is validated with zod first and turned into an effect (`planStripeEvent`,
 * pure); `internal.stripe_event_apply` (supabase/migrations/20261202000200_one_round_trip.sql)
 * then claims the event id, applies the effect with its out-of-order guard and records the
 * outcome, in one transaction of two round trips (`recordStripeEvent`). A correctly signed but
 * malformed event is ignored with the reason (acknowledged, so Stripe does not retry it for three
 * days), never a 500; so is an event whose id is text Postgres cannot store (a NUL character),
 * recorded under a digest of its id.
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
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { planStripeEvent, recordStripeEvent } from "./effects.ts";
 *
 * declare const db: Database;
 * const event = { id: "evt_1", type: "payment_intent.succeeded", created: 1764633600 };
 * const effect = planStripeEvent({ ...event, object: { id: "pi_1" } });
 * const createdAt = new Date(event.created * 1000);
 * const result = await recordStripeEvent(db, { ...event, createdAt, effect });
 * ```
 */
import * as z from "../../shared/zod.ts";
import type { Database } from "../../shared/db/db.ts";
import {
  isPostgresText,
  jsonLiteral,
  literal,
  toPostgresText,
} from "../../shared/db/sql_literal.ts";

/** What became of an event: applied, or acknowledged without effect and why. */
export type EventOutcome = { outcome: "applied" } | { outcome: "ignored"; reason: string };
import { clip } from "../../shared/text.ts";

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

/** A validated effect, as `internal.stripe_event_apply` takes it. */
export type Effect =
  | { kind: "ignored"; reason: string }
  | {
    kind: "checkout";
    user: string;
    session: string;
    payment_intent: string | null;
    customer: string | null;
    amount_total: number | null;
    currency: string | null;
    status: PurchaseStatus;
    rank: number;
  }
  | { kind: "purchase_status"; payment_intent: string; status: PurchaseStatus; rank: number }
  | {
    kind: "subscription";
    id: string;
    customer: string | null;
    status: string;
    /** ISO time; null keeps the stored one. */
    current_period_end: string | null;
    metadata_user: string | null;
    rank: number;
  };

/** The effect of the event, or why it has none. Pure: no database, no clock. */
export function planStripeEvent(event: StripeEventInput): Effect {
  if (!(HANDLED_TYPES as readonly string[]).includes(event.type)) {
    return ignored(`unhandled event type ${event.type}`);
  }
  switch (event.type as Handled) {
    case "checkout.session.completed":
      return parsed(CheckoutSession, event, checkoutCompleted);
    case "payment_intent.succeeded":
      return parsed(PaymentIntent, event, (pi) => purchaseStatus(pi.id, "paid"));
    case "payment_intent.payment_failed":
      return parsed(PaymentIntent, event, (pi) => purchaseStatus(pi.id, "failed"));
    case "charge.refunded":
      return parsed(Charge, event, (charge) => {
        if (!charge.payment_intent) return ignored("the charge names no payment_intent");
        // charge.refunded fires for partial refunds too; `refunded` is true once fully refunded.
        return purchaseStatus(
          charge.payment_intent,
          charge.refunded ? "refunded" : "partially_refunded",
        );
      });
    case "customer.subscription.created":
    case "customer.subscription.updated":
    case "customer.subscription.deleted":
      return parsed(Subscription, event, (sub) => ({
        kind: "subscription",
        id: sub.id,
        customer: sub.customer,
        status: sub.status,
        current_period_end: subscriptionPeriodEnd(sub)?.toISOString() ?? null,
        metadata_user: userIdIn(sub.metadata),
        rank: event.type === "customer.subscription.deleted" ? RANK.deleted : RANK.subscription,
      }));
    case "invoice.paid":
    case "invoice.payment_failed":
      return parsed(Invoice, event, (invoice) => {
        const subscription = invoice.parent?.subscription_details?.subscription ??
          invoice.subscription;
        if (!subscription) return ignored("the invoice belongs to no subscription");
        const paid = event.type === "invoice.paid";
        const ends = (invoice.lines?.data ?? []).map((line) => line.period.end);
        return {
          kind: "subscription",
          id: subscription,
          customer: invoice.customer ?? null,
          // Stripe moves a subscription to past_due when a renewal payment fails and back to
          // active once its invoice is paid (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses).
          status: paid ? "active" : "past_due",
          current_period_end: paid && ends.length
            ? new Date(Math.max(...ends) * 1000).toISOString()
            : null,
          metadata_user: userIdIn(invoice.parent?.subscription_details?.metadata),
          rank: RANK.invoice,
        };
      });
  }
}

/** What `recordStripeEvent` records. */
export interface EventRecord {
  id: string;
  type: string;
  /** event.created; null when the event did not say. */
  createdAt: Date | null;
  effect: Effect;
}

/**
 * Claims the event id, applies the effect and records the outcome, in one transaction: the
 * call and its `begin` in one round trip, the `commit` in a second, so a connection lost before
 * the commit leaves nothing written. "duplicate" when a committed delivery already recorded it.
 * Throws DatabaseUnavailable when the database is down (nothing written; Stripe delivers again).
 */
export async function recordStripeEvent(
  db: Database,
  e: EventRecord,
): Promise<"duplicate" | EventOutcome> {
  const call = applyCall("internal.stripe_event_apply", e);
  const [row] = await db.transactionOfOne<{ outcome: string; reason: string | null }>(call);
  if (row.outcome === "duplicate") return "duplicate";
  return row.outcome === "applied" ? APPLIED : { outcome: "ignored", reason: row.reason ?? "" };
}

/**
 * The catch-up's form of `recordStripeEvent`: the same claim, guarded effect and outcome
 * (`internal.stripe_event_catch_up` calls `internal.stripe_event_apply`), marked as recorded by
 * the catch-up, in ONE autocommit statement (one round trip). A connection lost before the
 * answer leaves the outcome unknown to the caller, never half-written: the event is then found
 * recorded, or not, by the next run. Throws DatabaseUnavailable when the database is down.
 */
export function catchUpStripeEvent(
  db: Database,
  e: EventRecord,
): Promise<"duplicate" | EventOutcome> {
  const call = applyCall("internal.stripe_event_catch_up", e);
  return db.query(async (sql) => {
    const [row] = await sql.unsafe<{ outcome: string; reason: string | null }[]>(call).simple();
    if (row.outcome === "duplicate") return "duplicate" as const;
    return row.outcome === "applied"
      ? APPLIED
      : { outcome: "ignored" as const, reason: row.reason ?? "" };
  });
}

/** The statement calling `fn(id, type, created, effect)`, the id and type made storable. */
function applyCall(fn: string, e: EventRecord): string {
  let { id, type, effect } = e;
  if (!isPostgresText(id)) {
    // Not a Stripe id (theirs are `evt_` and letters): recorded under a digest so that its
    // redeliveries stay duplicates, and acknowledged without effect.
    id = `invalid-id:${digest(id)}`;
    effect = ignored("the event id is not valid text");
  }
  type = clip(toPostgresText(type), 255);
  return `select outcome, reason from ${fn}(${literal(id)}, ${literal(type)}, ${
    literal(e.createdAt)
  }::timestamptz, ${jsonLiteral(effect)})`;
}

/** A short, stable digest of text that cannot be stored as it is (FNV-1a over UTF-16 units). */
function digest(text: string): string {
  let h1 = 0x811c9dc5, h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x811c9dc5) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0") + text.length;
}

// ---- validation -------------------------------------------------------------------------------

const stripeId = z.string().min(1).max(255).refine(isPostgresText, "must be valid text");
/** An expandable reference: the id, or the expanded object carrying it. */
const ref = z.union([stripeId, z.object({ id: stripeId })]).transform((v) =>
  typeof v === "string" ? v : v.id
);
const metadata = z.record(z.string(), z.string()).nullish();
/** Supabase user ids are uuids; any 8-4-4-4-12 hex string fits Postgres' uuid type. */
const userId = z.guid();
/** Seconds since the epoch, up to the end of year 9999 (a time Postgres and Date both hold). */
export const MAX_EPOCH_SECONDS = 253_402_300_799;
const timestamp = z.number().int().nonnegative().max(MAX_EPOCH_SECONDS);

const CheckoutSession = z.object({
  id: stripeId,
  client_reference_id: z.string().nullish(),
  metadata,
  payment_intent: ref.nullish(),
  customer: ref.nullish(),
  // Stripe never sends a negative total; one is not a purchase (issue 25).
  amount_total: z.number().int().nonnegative().nullish(),
  currency: z.string().max(10).refine(isPostgresText, "must be valid text").nullish(),
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

/** The effect of the validated object, or the event ignored naming the first bad field. */
function parsed<S extends z.ZodType>(
  schema: S,
  event: StripeEventInput,
  effect: (value: z.infer<S>) => Effect,
): Effect {
  const result = schema.safeParse(event.object);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = ["data", "object", ...issue.path.map(String)].join(".");
    return ignored(`malformed ${event.type}: ${path}: ${issue.message}`);
  }
  return effect(result.data);
}

function ignored(reason: string): Effect & { kind: "ignored" } {
  return { kind: "ignored", reason: clip(toPostgresText(reason), 500) };
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

function checkoutCompleted(s: z.infer<typeof CheckoutSession>): Effect {
  // The user is whoever our checkout page named (https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-client_reference_id).
  const fromReference = userId.safeParse(s.client_reference_id);
  const user = fromReference.success ? fromReference.data : userIdIn(s.metadata);
  if (!user) {
    return ignored("no user: neither client_reference_id nor metadata.user_id is a user id");
  }
  const status: PurchaseStatus = s.payment_status === "unpaid" ? "pending" : "paid";
  return {
    kind: "checkout",
    user,
    session: s.id,
    payment_intent: s.payment_intent ?? null,
    customer: s.customer ?? null,
    amount_total: s.amount_total ?? null,
    currency: s.currency ?? null,
    status,
    rank: PURCHASE_RANK[status],
  };
}

function purchaseStatus(paymentIntent: string, status: PurchaseStatus): Effect {
  return {
    kind: "purchase_status",
    payment_intent: paymentIntent,
    status,
    rank: PURCHASE_RANK[status],
  };
}

// ---- subscriptions ----------------------------------------------------------------------------

/** Between events of the same second: a deletion wins over an update, which wins over an invoice. */
const RANK = { invoice: 1, subscription: 2, deleted: 3 } as const;
