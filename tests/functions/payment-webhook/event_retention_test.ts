/** Stripe event ids are kept for the retention, then purged in bounded batches. */
import { assertEquals } from "@std/assert";
import { purgeStripeEvents } from "../../../functions/payment-webhook/event_retention.ts";
import { withMigratedDatabase } from "../../support/db.ts";

Deno.test("purgeStripeEvents() deletes ids older than the retention in batches and keeps the rest", async () => {
  await withMigratedDatabase(async (db) => {
    await db.query((sql) =>
      sql`
      insert into internal.stripe_events (id, type, received_at, outcome)
      select 'old_' || g, 't', now() - interval '31 days' - g * interval '1 minute', 'applied'
      from generate_series(1, 25) g`
    );
    await db.query((sql) =>
      sql`
      insert into internal.stripe_events (id, type, received_at, outcome)
      values ('recent', 't', now() - interval '29 days', 'applied'), ('new', 't', now(), 'applied')`
    );
    const partial = await purgeStripeEvents(db, {
      retentionDays: 30,
      batchSize: 10,
      maxBatches: 2,
    });
    assertEquals(partial, 20, "bounded by batch size × batches");
    assertEquals(await purgeStripeEvents(db, { retentionDays: 30, batchSize: 10 }), 5);
    const left = await db.query((sql) => sql`select id from internal.stripe_events order by id`);
    assertEquals(left.map((r) => r.id), ["new", "recent"]);
    assertEquals(await purgeStripeEvents(db, { retentionDays: 30, batchSize: 500 }), 0);
  }, { limits: { DB_QUERY_TIMEOUT_MS: "5000" } });
});
