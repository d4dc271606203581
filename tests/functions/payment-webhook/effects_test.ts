/**
 * payment-webhook's effects: purchases and subscriptions written from Stripe's events, repeats
 * answered as duplicates, order enforced by event.created, and events without an effect
 * (unknown type, no user, malformed object) recorded and acknowledged.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import type { TestServer } from "../../support/server.ts";
import {
  chargeRefunded,
  checkoutCompleted,
  delivery,
  envelope,
  invoiceEvent,
  paymentIntentEvent,
  type StripeEvent,
  stripeId,
  subscriptionEvent,
} from "./stripe_events.ts";
import { purchases, storedEvents, subscriptions, withWebhook } from "./support.ts";

async function send(server: TestServer, event: StripeEvent): Promise<Record<string, unknown>> {
  const res = await server.call("payment-webhook", await delivery(event));
  const body = await res.json();
  assertEquals(res.status, 200, JSON.stringify(body));
  return body;
}

async function outcomeOf(server: TestServer, id: string) {
  const event = (await storedEvents(server.platform.db)).find((e) => e.id === id);
  assert(event, `event ${id} is recorded`);
  return event;
}

const T0 = Math.floor(Date.now() / 1000) - 600;

Deno.test("checkout.session.completed creates one purchase for the client_reference_id user; a repeat answers duplicate", async () => {
  await withWebhook(async (server) => {
    const userId = crypto.randomUUID();
    const pi = stripeId("pi");
    const customer = stripeId("cus");
    const event = checkoutCompleted({ userId, paymentIntent: pi, customer, amountTotal: 4900 });
    assertEquals(await send(server, event), { received: true });
    assertEquals(await send(server, event), { received: true, duplicate: true });
    const rows = await purchases(server.platform.db);
    assertEquals(rows, [{
      user_id: userId,
      stripe_checkout_session_id: (event.data.object as { id: string }).id,
      stripe_payment_intent_id: pi,
      stripe_customer_id: customer,
      amount_total: "4900",
      currency: "usd",
      status: "paid",
    }]);
    assertEquals((await outcomeOf(server, event.id)).outcome, "applied");
  });
});

Deno.test("checkout.session.completed falls back to metadata.user_id when there is no client_reference_id", async () => {
  await withWebhook(async (server) => {
    const userId = crypto.randomUUID();
    await send(server, checkoutCompleted({ userId: null, metadataUserId: userId }));
    assertEquals((await purchases(server.platform.db)).map((p) => p.user_id), [userId]);
  });
});

Deno.test("a refund after a purchase marks it refunded; a partial refund marks it partially_refunded", async () => {
  await withWebhook(async (server) => {
    const full = stripeId("pi");
    const partial = stripeId("pi");
    await send(server, checkoutCompleted({ paymentIntent: full, created: T0 }));
    await send(server, checkoutCompleted({ paymentIntent: partial, created: T0 }));
    await send(server, chargeRefunded(full, { created: T0 + 60 }));
    await send(server, chargeRefunded(partial, { created: T0 + 60, amountRefunded: 1000 }));
    const byPi = Object.fromEntries(
      (await purchases(server.platform.db)).map((p) => [p.stripe_payment_intent_id, p.status]),
    );
    assertEquals(byPi, { [full]: "refunded", [partial]: "partially_refunded" });
  });
});

Deno.test("payment_intent events update the purchase's status, and an older one never overwrites a newer state", async () => {
  await withWebhook(async (server) => {
    const pi = stripeId("pi");
    await send(
      server,
      checkoutCompleted({ paymentIntent: pi, paymentStatus: "unpaid", created: T0 }),
    );
    assertEquals((await purchases(server.platform.db))[0].status, "pending");
    const succeeded = paymentIntentEvent("payment_intent.succeeded", pi, { created: T0 + 20 });
    const failedEarlier = paymentIntentEvent("payment_intent.payment_failed", pi, {
      created: T0 + 10,
    });
    await send(server, succeeded);
    await send(server, failedEarlier); // delivered late
    assertEquals((await purchases(server.platform.db))[0].status, "paid");
    assertEquals((await outcomeOf(server, succeeded.id)).outcome, "applied");
    const stale = await outcomeOf(server, failedEarlier.id);
    assertEquals(stale.outcome, "ignored");
    assertMatch(stale.reason ?? "", /newer event/);
  });
});

Deno.test("out-of-order subscription events end in the newest state", async () => {
  await withWebhook(async (server) => {
    const userId = crypto.randomUUID();
    const sub = stripeId("sub");
    const customer = stripeId("cus");
    const base = { subscription: sub, customer, userId };
    const created = subscriptionEvent("created", {
      ...base,
      status: "incomplete",
      periodEnd: T0 + 30 * 86400,
      created: T0,
    });
    const active = subscriptionEvent("updated", {
      ...base,
      status: "active",
      periodEnd: T0 + 30 * 86400,
      created: T0 + 5,
    });
    const renewed = subscriptionEvent("updated", {
      ...base,
      status: "active",
      periodEnd: T0 + 60 * 86400,
      created: T0 + 100,
    });
    const deleted = subscriptionEvent("deleted", {
      ...base,
      status: "canceled",
      periodEnd: T0 + 60 * 86400,
      created: T0 + 200,
    });
    const lateInvoice = invoiceEvent("invoice.paid", {
      subscription: sub,
      customer,
      periodEnd: T0 + 30 * 86400,
      created: T0 + 6,
    });
    // Newest first, the oldest last: the stored state must stay the deletion's.
    for (const e of [deleted, renewed, lateInvoice, active, created]) await send(server, e);
    assertEquals(await subscriptions(server.platform.db), [{
      stripe_subscription_id: sub,
      user_id: userId,
      status: "canceled",
      current_period_end: new Date((T0 + 60 * 86400) * 1000),
    }]);
    for (const e of [renewed, lateInvoice, active, created]) {
      assertEquals((await outcomeOf(server, e.id)).outcome, "ignored");
    }
  });
});

Deno.test("invoice events keep the subscription's status and period end; the customer ties it to the checkout's user", async () => {
  await withWebhook(async (server) => {
    const userId = crypto.randomUUID();
    const customer = stripeId("cus");
    const sub = stripeId("sub");
    // The checkout teaches which user the customer is; the subscription carries no metadata.
    await send(server, checkoutCompleted({ userId, customer, created: T0 }));
    await send(
      server,
      subscriptionEvent("created", {
        subscription: sub,
        customer,
        status: "active",
        periodEnd: T0 + 30 * 86400,
        created: T0 + 1,
      }),
    );
    await send(
      server,
      invoiceEvent("invoice.payment_failed", {
        subscription: sub,
        customer,
        periodEnd: T0 + 60 * 86400,
        created: T0 + 100,
      }),
    );
    let [row] = await subscriptions(server.platform.db);
    assertEquals([row.user_id, row.status], [userId, "past_due"]);
    assertEquals(row.current_period_end, new Date((T0 + 30 * 86400) * 1000));
    await send(
      server,
      invoiceEvent("invoice.paid", {
        subscription: sub,
        customer,
        periodEnd: T0 + 60 * 86400,
        created: T0 + 200,
      }),
    );
    [row] = await subscriptions(server.platform.db);
    assertEquals(row.status, "active");
    assertEquals(row.current_period_end, new Date((T0 + 60 * 86400) * 1000));
  });
});

Deno.test("an unknown event type is acknowledged and recorded as ignored", async () => {
  await withWebhook(async (server) => {
    const event = envelope("customer.created", { id: stripeId("cus"), object: "customer" });
    assertEquals(await send(server, event), { received: true });
    const stored = await outcomeOf(server, event.id);
    assertEquals([stored.type, stored.outcome], ["customer.created", "ignored"]);
    assertMatch(stored.reason ?? "", /unhandled event type customer\.created/);
  });
});

Deno.test("events that cannot be tied to a user are acknowledged and recorded with the reason, writing nothing", async () => {
  await withWebhook(async (server) => {
    const noUser = checkoutCompleted({ userId: null });
    const notAUuid = checkoutCompleted({ userId: "user-42" });
    const orphanRefund = chargeRefunded(stripeId("pi"));
    const orphanSub = subscriptionEvent("created", {
      subscription: stripeId("sub"),
      customer: stripeId("cus"),
      status: "active",
      periodEnd: T0 + 86400,
    });
    for (const e of [noUser, notAUuid, orphanRefund, orphanSub]) {
      assertEquals(await send(server, e), { received: true });
    }
    assertMatch((await outcomeOf(server, noUser.id)).reason ?? "", /no user/);
    assertMatch((await outcomeOf(server, notAUuid.id)).reason ?? "", /no user/);
    assertMatch((await outcomeOf(server, orphanRefund.id)).reason ?? "", /no purchase/);
    assertMatch((await outcomeOf(server, orphanSub.id)).reason ?? "", /no user for subscription/);
    assertEquals(await purchases(server.platform.db), []);
    assertEquals(await subscriptions(server.platform.db), []);
    // Recorded means remembered: a redelivery is a duplicate.
    assertEquals(await send(server, noUser), { received: true, duplicate: true });
  });
});

Deno.test("a correctly signed event with a malformed object is recorded as ignored naming the field, never a 500", async () => {
  await withWebhook(async (server) => {
    const event = checkoutCompleted();
    (event.data.object as Record<string, unknown>).amount_total = "4900";
    const noData = { ...envelope("invoice.paid", {}), data: null };
    const sub = subscriptionEvent("updated", {
      subscription: stripeId("sub"),
      customer: stripeId("cus"),
      status: "not-a-status",
      periodEnd: T0,
      userId: crypto.randomUUID(),
    });
    for (const e of [event, noData as unknown as StripeEvent, sub]) await send(server, e);
    assertMatch(
      (await outcomeOf(server, event.id)).reason ?? "",
      /malformed checkout\.session\.completed: data\.object\.amount_total/,
    );
    assertMatch((await outcomeOf(server, noData.id)).reason ?? "", /malformed event/);
    assertMatch((await outcomeOf(server, sub.id)).reason ?? "", /data\.object\.status/);
    assertEquals(await purchases(server.platform.db), []);
    assertEquals(await subscriptions(server.platform.db), []);
  });
});

Deno.test("row-level security lets a user read only their own purchases and subscriptions", async () => {
  await withWebhook(async (server) => {
    const alice = crypto.randomUUID();
    const bob = crypto.randomUUID();
    for (const userId of [alice, bob]) {
      await send(server, checkoutCompleted({ userId }));
      await send(
        server,
        subscriptionEvent("created", {
          subscription: stripeId("sub"),
          customer: stripeId("cus"),
          status: "active",
          periodEnd: T0 + 30 * 86400,
          userId,
        }),
      );
    }
    for (const table of ["public.purchases", "public.subscriptions"]) {
      const all = await server.platform.db.query((sql) =>
        sql.unsafe(`select user_id from ${table} order by user_id`)
      );
      assertEquals(all.length, 2, `${table} holds both users' rows`);
      const seen = await server.platform.db.transaction(async (tx) => {
        await tx`set local role authenticated`;
        await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: alice })}, true)`;
        return [...await tx.unsafe(`select user_id from ${table}`)];
      });
      assertEquals(seen.map((r) => r.user_id), [alice], `${table}: alice sees only her row`);
      await assertRejects(
        () =>
          server.platform.db.transaction(async (tx) => {
            await tx`set local role anon`;
            await tx.unsafe(`select 1 from ${table}`);
          }),
        Error,
        "permission denied",
      );
    }
  });
});
