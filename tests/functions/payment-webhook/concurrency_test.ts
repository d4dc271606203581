/**
 * Exactly once across instances: concurrent deliveries of one event to two server processes on
 * one database give one effect and only 200s. Needs the Postgres server (`onServer`).
 */
import postgres from "postgres";
import { assertEquals } from "@std/assert";
import { freshDatabase, onServer } from "../../support/db.ts";
import { testEnv } from "../../support/env.ts";
import { spawnServer } from "../../support/server.ts";
import { checkoutCompleted, delivery, webhookEnv } from "./stripe_events.ts";

Deno.test({
  name:
    "20 concurrent deliveries of one event across two server processes give exactly one purchase and only 200s",
  ...onServer,
  async fn() {
    const db = await freshDatabase({ migrated: true });
    try {
      const env = testEnv(db.url, webhookEnv());
      const servers = await Promise.all([spawnServer(env), spawnServer(env)]);
      try {
        const event = checkoutCompleted();
        const init = await delivery(event);
        const responses = await Promise.all(
          Array.from({ length: 20 }, async (_, i) => {
            const res = await servers[i % 2].call("payment-webhook", init);
            return { status: res.status, body: await res.json() };
          }),
        );
        assertEquals(responses.map((r) => r.status), Array(20).fill(200));
        const firsts = responses.filter((r) => !r.body.duplicate);
        assertEquals(firsts.map((r) => r.body), [{ received: true }]);
        assertEquals(
          responses.filter((r) => r.body.duplicate).length,
          19,
          "every other delivery is told it is a duplicate",
        );

        const sql = postgres(db.url, { max: 1, onnotice: () => {} });
        try {
          const [{ purchases }] =
            await sql`select count(*)::int as purchases from public.purchases`;
          const events = await sql`select id, outcome from internal.stripe_events`;
          assertEquals(purchases, 1);
          assertEquals([...events], [{ id: event.id, outcome: "applied" }]);
        } finally {
          await sql.end();
        }
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
      }
    } finally {
      await db.close();
    }
  },
});
