/**
 * payment-webhook under the attacks of issue 12: a signature dated far in the future (point 11:
 * the tolerance holds both ways) and a signed event whose id or type Postgres cannot store
 * (point 5: recorded and acknowledged, never a 500 that Stripe would retry for three days).
 */
import { assert, assertEquals } from "@std/assert";
import { checkoutCompleted, delivery, envelope, SECRET } from "./stripe_events.ts";
import { purchases, storedEvents, withWebhook } from "./support.ts";

const PATH = "payment-webhook";

Deno.test("payment-webhook refuses a signature dated beyond the tolerance in the future, and accepts one within it", async () => {
  await withWebhook(async (server) => {
    const now = Math.floor(Date.now() / 1000);
    const future = await server.call(
      PATH,
      await delivery(checkoutCompleted(), SECRET, { timestamp: now + 3600 }),
    );
    assertEquals(future.status, 400);
    assertEquals((await future.json()).error.code, "INVALID_SIGNATURE");
    const justOver = await server.call(
      PATH,
      await delivery(checkoutCompleted(), SECRET, { timestamp: now + 330 }),
    );
    assertEquals(justOver.status, 400, "301+ s ahead is past the 300 s tolerance");
    await justOver.body?.cancel();
    assertEquals(await storedEvents(server.platform.db), []);

    const skewed = await server.call(
      PATH,
      await delivery(checkoutCompleted(), SECRET, { timestamp: now + 60 }),
    );
    assertEquals(await skewed.json(), { received: true }, "a minute of clock skew is fine");
    assertEquals((await purchases(server.platform.db)).length, 1);
  });
});

Deno.test("payment-webhook records and acknowledges a signed event whose id or type holds a NUL character; its redelivery is a duplicate", async () => {
  await withWebhook(async (server) => {
    const nulId = envelope("checkout.session.completed", {}, { id: "evt_\u0000nul" });
    const first = await server.call(PATH, await delivery(nulId));
    assertEquals(first.status, 200);
    assertEquals(await first.json(), { received: true });
    const again = await server.call(PATH, await delivery(nulId));
    assertEquals(await again.json(), { received: true, duplicate: true });

    const nulType = envelope("invoice.\u0000paid", { id: "in_1" });
    const typed = await server.call(PATH, await delivery(nulType));
    assertEquals(await typed.json(), { received: true });

    const lone = envelope("charge.refunded", {
      id: "ch_1",
      payment_intent: "pi_\ud800",
      refunded: true,
    });
    const surrogate = await server.call(PATH, await delivery(lone));
    assertEquals(await surrogate.json(), { received: true });

    const events = await storedEvents(server.platform.db);
    assertEquals(events.length, 3);
    assert(events.every((e) => e.outcome === "ignored"), JSON.stringify(events));
    assert(events.some((e) => e.id.startsWith("invalid-id:")), "recorded under a digest of its id");
    assertEquals(await purchases(server.platform.db), []);
  });
});
