/**
 * The purges ride on their function's scheduled job (the contract's Schedules: pg_cron calls the
 * drain, the sync and the catch-up, and the purges with them), so expired rows go even while
 * nobody else calls: with nothing but the scheduled calls, old Stripe event ids and expired
 * idempotency keys are purged. (The alert drain purges sent alerts in every pass of its own.)
 */
import { assertEquals } from "@std/assert";
import { startStack } from "../support/stack.ts";

Deno.test("the scheduled catch-up purges old Stripe event ids, and the scheduled sync expired idempotency keys, with no other call", async () => {
  const stack = await startStack({
    env: { WEBHOOK_PURGE_INTERVAL_SECONDS: "1", IDEMPOTENCY_PURGE_INTERVAL_SECONDS: "1" },
  });
  try {
    const { sql } = stack;
    await sql`insert into internal.stripe_events (id, type, received_at, outcome)
      select 'evt_old_' || g, 't', now() - interval '40 days', 'applied'
      from generate_series(1, 5) g`;
    await sql`insert into internal.idempotency_keys (scope, owner, key, key_id, fingerprint,
        created_at, updated_at, expires_at)
      select 'broker-order', 'someone', 'expired-' || g, gen_random_uuid(), 'f',
        now() - interval '2 days', now() - interval '2 days', now() - interval '1 day'
      from generate_series(1, 5) g`;
    const service = { authorization: `Bearer ${await stack.serviceToken()}` };
    const left = async () => {
      const [{ events }] = await sql`select count(*)::int as events from internal.stripe_events
        where id like 'evt_old_%'`;
      const [{ keys }] = await sql`select count(*)::int as keys from internal.idempotency_keys
        where key like 'expired-%'`;
      return { events, keys };
    };
    // What pg_cron does: POST the jobs' routes, here every 300 ms for at most 10 s.
    for (let i = 0; i < 33; i++) {
      for (const path of ["payment-webhook/catch-up", "broker-order/sync"]) {
        await (await stack.server.call(path, { method: "POST", headers: service })).body?.cancel();
      }
      const now = await left();
      if (now.events === 0 && now.keys === 0) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    assertEquals(await left(), { events: 0, keys: 0 });
  } finally {
    await stack.close();
  }
});
