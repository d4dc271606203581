/**
 * Shared setup of the payment-webhook tests: a fresh database with the real server in this
 * process, and reads of what the webhook wrote (through the server's own pool, since the
 * embedded database serves a single connection).
 */
import type { Database } from "../../../shared/db/db.ts";
import { freshDatabase } from "../../support/db.ts";
import { testEnv } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { webhookEnv } from "./stripe_events.ts";

/** Runs `fn` against payment-webhook on a fresh database; closes both afterwards. */
export async function withWebhook(
  fn: (server: TestServer) => Promise<void>,
  extra: Record<string, string> = {},
): Promise<void> {
  const db = await freshDatabase({ migrated: true });
  try {
    const env = { ...webhookEnv(), ...extra };
    const server = await startTestServer(testEnv(db.url, env), {
      only: ["payment-webhook"],
    });
    try {
      await fn(server);
    } finally {
      await server.close();
    }
  } finally {
    await db.close();
  }
}

export interface StoredEvent {
  id: string;
  type: string;
  outcome: string | null;
  reason: string | null;
}

/** Every recorded Stripe event. */
export function storedEvents(db: Database): Promise<StoredEvent[]> {
  return db.query(async (sql) => [
    ...await sql<StoredEvent[]>`
      select id, type, outcome, reason from internal.stripe_events order by id`,
  ]);
}

export interface PurchaseRow {
  user_id: string;
  stripe_checkout_session_id: string;
  stripe_payment_intent_id: string | null;
  stripe_customer_id: string | null;
  amount_total: string | null;
  currency: string | null;
  status: string;
}

export function purchases(db: Database): Promise<PurchaseRow[]> {
  return db.query(async (sql) => [
    ...await sql<PurchaseRow[]>`
      select user_id, stripe_checkout_session_id, stripe_payment_intent_id, stripe_customer_id,
        amount_total::text, currency, status
      from public.purchases order by created_at`,
  ]);
}

export interface SubscriptionRow {
  stripe_subscription_id: string;
  user_id: string;
  status: string;
  current_period_end: Date | null;
}

export function subscriptions(db: Database): Promise<SubscriptionRow[]> {
  return db.query(async (sql) => [
    ...await sql<SubscriptionRow[]>`
      select stripe_subscription_id, user_id, status, current_period_end
      from public.subscriptions order by stripe_subscription_id`,
  ]);
}
