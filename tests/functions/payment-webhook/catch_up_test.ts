/**
 * payment-webhook's catch-up (issue 24) against the Stripe simulator: events whose webhook never
 * arrived are applied once; a run with nothing new reads a page and writes nothing; a backlog
 * larger than a run's bound drains over runs with nothing skipped, events created mid-paging
 * included; Stripe down, slow or refusing changes nothing; an old event read late never undoes a
 * newer one; only service callers may run it; status shows it.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { serviceToken, userToken } from "../../support/env.ts";
import { type FaultProxy, startFaultProxy } from "../../support/fault_proxy.ts";
import type { SimulatedEvent } from "../../../local/sandbox/stripe.ts";
import { withCatchUp } from "./catch_up_support.ts";
import { checkoutCompleted, stripeId, subscriptionEvent } from "./stripe_events.ts";

const now = () => Math.floor(Date.now() / 1000);
const asSim = (e: unknown) => e as SimulatedEvent;

Deno.test("catch-up: events whose webhook never arrived are applied once; a second run reads one page and writes nothing", async () => {
  await withCatchUp(async ({ sim, run, state, server }) => {
    const delivered = await sim.emit(asSim(checkoutCompleted({ created: now() - 60 })));
    assertEquals(delivered.delivery, { delivered: true, status: 200 });
    const userId = crypto.randomUUID();
    const lostCheckout = await sim.emit(asSim(checkoutCompleted({ userId, created: now() - 50 })), {
      deliver: false,
    });
    const lostSubscription = await sim.emit(
      asSim(subscriptionEvent("created", {
        subscription: stripeId("sub"),
        customer: stripeId("cus"),
        status: "active",
        periodEnd: now() + 30 * 86400,
        userId,
        created: now() - 40,
      })),
      { deliver: false },
    );
    assertEquals((await state()).events.length, 1, "only the delivered webhook is recorded");

    const first = await run();
    assertEquals(first.status, 200);
    assertEquals(first.body.applied, 2);
    assertEquals(first.body.alreadyApplied, 1);
    assertEquals(first.body.hasMore, false);
    assertEquals(first.body.cursorSaved, true);
    const after = await state();
    assertEquals(after.purchases, 2);
    assertEquals(after.subscriptions.map((s) => s.status), ["active"]);
    assertEquals(
      after.events.filter((e) => e.via === "catch-up").map((e) => e.id).sort(),
      [lostCheckout.event.id, lostSubscription.event.id].sort(),
    );
    const query = sim.listQueries[0];
    assertEquals(query.get("limit"), "100");
    assert(query.get("created[gte]") !== null && query.get("created[lte]") !== null);
    assert([...query.keys()].some((k) => k.startsWith("types[")), "asks only for handled types");
    assert(
      server.logs.some((l) =>
        l.includes("operator alert") && l.includes("webhooks are being missed")
      ),
      "a run that recorded missed events tells operators",
    );

    sim.resetCalls();
    const second = await run();
    assertEquals(second.status, 200);
    assertEquals(second.body.applied, 0);
    assertEquals(second.body.ignored, 0);
    assertEquals(second.body.alreadyApplied, 3, "the overlap re-reads, without effect");
    assertEquals(second.body.cursorSaved, false, "nothing new: the cursor is not written");
    assert(sim.listCalls <= 2, `a run with nothing new read ${sim.listCalls} pages`);
    const again = await state();
    assertEquals(again.cursor?.version, after.cursor?.version, "no write");
    assertEquals(again.events, after.events);

    // A webhook Stripe re-sends later is a duplicate: the catch-up already recorded it.
    const resent = await sim.deliver(lostCheckout.event);
    assertEquals(resent, { delivered: true, status: 200 });
    assertEquals((await state()).purchases, 2);

    const status = await server.call("status", {
      headers: { authorization: `Bearer ${await serviceToken()}` },
    });
    const catchUp = (await status.json()).dependencies.stripeCatchUp;
    assertEquals(catchUp.caughtUpLastDay, 2);
    assertEquals(catchUp.appliedLastDay, 2);
    assert(catchUp.lagSeconds >= 0 && catchUp.lagSeconds < 60, `lag ${catchUp.lagSeconds}`);
    assertMatch(catchUp.missedWebhooks, /webhooks were missed/);
    assertEquals(catchUp.scanInProgress, false);
  });
});

Deno.test("catch-up: a backlog larger than a run's bound drains over runs with nothing skipped, events created mid-paging included", async () => {
  await withCatchUp(async ({ sim, run, state }) => {
    const start = now();
    const backlog: string[] = [];
    for (let i = 0; i < 45; i++) {
      // Several events per second, as a busy account has (ties are ordered by Stripe, not time).
      const e = checkoutCompleted({ created: start - 900 + Math.floor(i / 3) });
      backlog.push((await sim.emit(asSim(e), { deliver: false })).event.id);
    }
    const midPaging: string[] = [];
    sim.beforeList = async (call) => {
      if (call === 2 || call === 5) {
        // Created while a scan pages: one now, one "listed late" (created a few seconds ago,
        // inside the window the scan is reading but above where it has got to).
        for (const created of [now(), now() - 5]) {
          const e = checkoutCompleted({ created });
          midPaging.push((await sim.emit(asSim(e), { deliver: false })).event.id);
        }
      }
    };
    const runs = [];
    for (let i = 0; i < 20; i++) {
      const r = await run();
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assert(r.body.read <= 10, `a run read ${r.body.read} events, past its bound of 10`);
      runs.push(r.body);
      if (!r.body.hasMore && r.body.applied === 0 && i > 0) break;
    }
    assert(runs.length >= 5, `45 events at 10 per run took ${runs.length} runs`);
    assert(runs.slice(0, 4).every((r) => r.hasMore), "the first runs stop at the bound");
    const stored = await state();
    const recorded = new Set(stored.events.map((e) => e.id));
    const missing = [...backlog, ...midPaging].filter((id) => !recorded.has(id));
    assertEquals(missing, [], "nothing skipped");
    assertEquals(stored.events.length, backlog.length + midPaging.length, "each recorded once");
    assertEquals(stored.purchases, backlog.length + midPaging.length);
    const applied = runs.reduce((n, r) => n + r.applied, 0);
    assertEquals(applied, backlog.length + midPaging.length, "each applied by exactly one run");
    assertEquals(stored.cursor?.scan_after, null, "the last scan finished");
  }, { extra: { STRIPE_CATCHUP_MAX_EVENTS: "10" } });
});

Deno.test("catch-up: Stripe down, slow or unreachable changes nothing (503 with Retry-After); the next run applies what was missed", async () => {
  let proxy: FaultProxy | undefined;
  try {
    await withCatchUp(async ({ sim, run, state }) => {
      const lost = await sim.emit(asSim(checkoutCompleted()), { deliver: false });
      const before = await state();

      sim.down = true;
      const failed = await run();
      assertEquals(failed.status, 503);
      assertEquals(failed.body.error.code, "UPSTREAM_UNAVAILABLE");
      assertMatch(failed.body.error.message, /answered 500/);
      assert(Number(failed.headers.get("retry-after")) >= 1);
      sim.down = false;

      proxy!.cut();
      const cut = await run();
      assertEquals(cut.status, 503, JSON.stringify(cut.body));
      assertMatch(cut.body.error.message, /Stripe API/);
      proxy!.heal();

      proxy!.stall();
      const slow = await run();
      assertEquals(slow.status, 503, JSON.stringify(slow.body));
      assertMatch(slow.body.error.message, /timed out/);
      proxy!.heal();

      assertEquals(await state(), before, "nothing changed: no event, no cursor");

      const next = await run();
      assertEquals(next.status, 200, JSON.stringify(next.body));
      assertEquals(next.body.applied, 1);
      assertEquals((await state()).events.map((e) => e.id), [lost.event.id]);
    }, {
      extra: { STRIPE_TIMEOUT_MS: "300" },
      stripeUrl: async (simUrl) => {
        const u = new URL(simUrl);
        proxy = await startFaultProxy({ hostname: u.hostname, port: Number(u.port) });
        return `http://127.0.0.1:${proxy.port}`;
      },
    });
  } finally {
    await proxy?.close();
  }
});

Deno.test("catch-up: an open breaker answers 503 CIRCUIT_OPEN without calling Stripe, and the next run after it resets applies", async () => {
  await withCatchUp(async ({ sim, run, state }) => {
    await sim.emit(asSim(checkoutCompleted()), { deliver: false });
    sim.down = true;
    for (let i = 0; i < 2; i++) assertEquals((await run()).status, 503);
    sim.resetCalls();
    const open = await run();
    assertEquals(open.body.error.code, "CIRCUIT_OPEN");
    assertEquals(sim.listCalls, 0, "an open breaker does not call Stripe");
    assertEquals((await state()).events, []);
    sim.down = false;
    await new Promise((r) => setTimeout(r, 1100)); // BREAKER_RESET_MS in the tests: 1 s
    const next = await run();
    assertEquals(next.status, 200, JSON.stringify(next.body));
    assertEquals(next.body.applied, 1);
  }, { extra: { BREAKER_VOLUME_THRESHOLD: "2" } });
});

Deno.test("catch-up: an old subscription event read late never undoes a newer one", async () => {
  await withCatchUp(async ({ sim, run, state }) => {
    const subscription = stripeId("sub");
    const customer = stripeId("cus");
    const userId = crypto.randomUUID();
    const base = { subscription, customer, periodEnd: now() + 86400, userId };
    // The newer state (canceled) arrives; the older update (active) is lost.
    await sim.emit(
      asSim(subscriptionEvent("updated", { ...base, status: "active", created: now() - 100 })),
      {
        deliver: false,
      },
    );
    const deleted = await sim.emit(
      asSim(subscriptionEvent("deleted", { ...base, status: "canceled", created: now() - 10 })),
    );
    assertEquals(deleted.delivery, { delivered: true, status: 200 });
    const r = await run();
    assertEquals(r.status, 200);
    assertEquals(r.body.applied, 0);
    assertEquals(r.body.ignored, 1, "recorded, without effect");
    const s = await state();
    assertEquals(s.subscriptions.map((x) => x.status), ["canceled"]);
    assertEquals(s.events.length, 2);
  });
});

Deno.test("catch-up: only service callers run it (401 without a token, 403 for a user); a key Stripe refuses is 502 and changes nothing", async () => {
  await withCatchUp(async ({ server, sim, state }) => {
    await sim.emit(asSim(checkoutCompleted()), { deliver: false });
    const anonymous = await server.call("payment-webhook/catch-up", { method: "POST" });
    assertEquals(anonymous.status, 401);
    await anonymous.body?.cancel();
    const user = await server.call("payment-webhook/catch-up", {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken()}` },
    });
    assertEquals(user.status, 403);
    await user.body?.cancel();
    const get = await server.call("payment-webhook/catch-up", {
      headers: { authorization: `Bearer ${await serviceToken()}` },
    });
    assertEquals(get.status, 405);
    await get.body?.cancel();
    assertEquals(sim.listCalls, 0);
    assertEquals((await state()).events, []);
  });
  await withCatchUp(async ({ run, sim, state }) => {
    await sim.emit(asSim(checkoutCompleted()), { deliver: false });
    const refused = await run();
    assertEquals(refused.status, 502);
    assertEquals(refused.body.error.code, "STRIPE_REFUSED");
    assertMatch(refused.body.error.message, /401/);
    assert(Number(refused.headers.get("retry-after")) >= 1);
    assertEquals((await state()).events, []);
    assertEquals((await state()).cursor, null);
  }, { extra: { STRIPE_SECRET_KEY: "sk_test_not_the_simulators_key" } });
});

Deno.test("catch-up: a STRIPE_API_URL that is not scheme://host[:port] keeps payment-webhook from booting", async () => {
  await withCatchUp(async ({ server }) => {
    const res = await server.call("payment-webhook/catch-up", { method: "POST" });
    assertEquals(res.status, 503);
    const body = await res.json();
    assertEquals(body.error.code, "BOOT_ERROR");
    assertMatch(body.error.message, /STRIPE_API_URL/);
  }, { stripeUrl: (simUrl) => Promise.resolve(`${simUrl}/v1`) });
});

Deno.test("catch-up: a scan resumed after an event Stripe no longer lists ends there, and the next scan goes on", async () => {
  await withCatchUp(async ({ sim, run, state, server }) => {
    const lost = await sim.emit(asSim(checkoutCompleted()), { deliver: false });
    const start = now();
    // A scan saved long ago, whose last event has since left Stripe's 30 days.
    await server.platform.db.query((sql) =>
      sql`insert into internal.stripe_catch_up (id, covered_until, scan_from, scan_to, scan_after)
          values (true, ${new Date((start - 3600) * 1000)}, ${new Date((start - 3600) * 1000)},
            ${new Date((start - 60) * 1000)}, 'evt_expired_long_ago')`
    );
    const ended = await run();
    assertEquals(ended.status, 200, JSON.stringify(ended.body));
    assertEquals(ended.body.hasMore, false);
    assertEquals(ended.body.cursor.scan, null);
    const next = await run();
    assertEquals(next.status, 200);
    assertEquals(next.body.applied, 1, "the next scan reads from the covered time on");
    assertEquals((await state()).events.map((e) => e.id), [lost.event.id]);
  });
});
