/**
 * broker-order when the broker misbehaves: answers lost past the deadline, rejections, rate
 * limits and outages (the breaker). Through the real server, against the simulated Alpaca.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { MARKET, trader, withWorld, type World } from "./harness.ts";

async function withServer(
  extra: Record<string, string>,
  fn: (s: TestServer, w: World) => Promise<void>,
) {
  await withWorld(async (w) => {
    const server = await startTestServer(w.env(extra), { only: ["broker-order"] });
    try {
      await fn(server, w);
    } finally {
      await server.close();
    }
  });
}

const posts = (w: World) => w.broker.calls.filter((c) => c.startsWith("POST")).length;

Deno.test("a replay returns the stored answer with Idempotent-Replayed: true; another body with the key is 422", () =>
  withServer({}, async (server, w) => {
    const t = await trader(server.call);
    const first = await t.order(MARKET, "replay-key-0001");
    assertEquals(first.status, 201);
    const body = await first.text();
    const order = JSON.parse(body);
    assertEquals(order.status, "accepted");
    assertEquals(order.brokerOrderId, w.broker.orders[0].id);
    assertMatch(order.clientOrderId, /^[A-Za-z0-9_-]{1,48}$/);
    assertEquals(order.clientOrderId, w.broker.orders[0].client_order_id);
    assertEquals([order.symbol, order.side, order.type, order.qty, order.timeInForce], [
      "AAPL",
      "buy",
      "market",
      "1",
      "day",
    ]);

    // The same request with its fields in another order is the same request.
    const reordered = { time_in_force: "day", qty: 1, type: "market", side: "buy", symbol: "AAPL" };
    const replay = await t.order(reordered, "replay-key-0001");
    assertEquals(replay.status, 201);
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals(await replay.text(), body);

    const reused = await t.order({ ...MARKET, qty: 2 }, "replay-key-0001");
    assertEquals(reused.status, 422);
    assertEquals((await reused.json()).error.code, "IDEMPOTENCY_KEY_REUSED");
    assertEquals(w.broker.placed, 1);

    // Another user's identical key is theirs: their own order, their own client_order_id.
    const other = await trader(server.call);
    const theirs = await (await other.order(MARKET, "replay-key-0001")).json();
    assert(theirs.clientOrderId !== order.clientOrderId);
    assertEquals(w.broker.placed, 2);
  }));

Deno.test("a broker rejection is final: 422 ORDER_REJECTED in plain words, stored and replayed, never resent", () =>
  withServer({}, async (server, w) => {
    w.broker.reject("GME");
    w.broker.reject("EVIL", {
      status: 422,
      code: 40010001,
      message: "<b>asset</b> is not tradable",
    });
    const t = await trader(server.call);
    const res = await t.order({ ...MARKET, symbol: "GME" }, "rejected-key-01");
    assertEquals(res.status, 422);
    const { error } = await res.json();
    assertEquals(error.code, "ORDER_REJECTED");
    assertEquals(error.message, "The broker rejected the order: insufficient buying power.");
    const replay = await t.order({ ...MARKET, symbol: "GME" }, "rejected-key-01");
    assertEquals(replay.status, 422);
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals((await replay.json()).error.message, error.message);
    assertEquals(posts(w), 1, "a rejection is not retried");

    const markup = await (await t.order({ ...MARKET, symbol: "EVIL" })).json();
    assertEquals(markup.error.message, "The broker rejected the order: asset is not tradable.");
    const listed = (await (await t.list()).json()).orders;
    assertEquals(listed.map((o: { status: string }) => o.status), ["rejected", "rejected"]);
    assertEquals(w.broker.placed, 0);
  }));

Deno.test("a lost answer (the broker took the order, its answer came after the deadline) is found by lookup: 201", () =>
  withServer({ BROKER_TIMEOUT_MS: "300" }, async (server, w) => {
    w.broker.delayMs = 2_000;
    const t = await trader(server.call);
    const res = await t.order(MARKET, "lost-answer-key-1");
    assertEquals(res.status, 201);
    const order = await res.json();
    assertEquals(order.brokerOrderId, w.broker.orders[0].id);
    assertEquals(w.broker.calls.slice(0, 2), [
      "POST /v2/orders pending",
      "GET /v2/orders:by_client_order_id 200",
    ]);
    w.broker.delayMs = 0;
    const again = await t.order(MARKET, "lost-answer-key-1");
    assertEquals(again.headers.get("idempotent-replayed"), "true");
    assertEquals(w.broker.placed, 1);
    assertEquals(posts(w), 1);
  }));

Deno.test("an unknown outcome is 202 pending_confirmation; retries resolve it by lookup, never by resubmitting", () =>
  withServer({ BROKER_TIMEOUT_MS: "300" }, async (server, w) => {
    w.broker.delayMs = 2_000;
    w.broker.lookupDelayMs = 2_000;
    const t = await trader(server.call);
    const key = "unknown-outcome-01";
    const pending = await t.order(MARKET, key);
    assertEquals(pending.status, 202);
    const first = await pending.json();
    assertEquals(first.status, "pending_confirmation");
    assertEquals(first.brokerOrderId, null);
    assertEquals((await (await t.list()).json()).orders[0].status, "pending_confirmation");

    // Still unknowable: the retry asks the broker again (not replayed, not resent).
    const stillPending = await t.order(MARKET, key);
    assertEquals(stillPending.status, 202);
    assertEquals(stillPending.headers.get("idempotent-replayed"), null);
    assertEquals((await stillPending.json()).id, first.id);

    w.broker.delayMs = 0;
    w.broker.lookupDelayMs = 0;
    const resolved = await t.order(MARKET, key);
    assertEquals(resolved.status, 201);
    const order = await resolved.json();
    assertEquals(order.id, first.id, "the same order row, now confirmed");
    assertEquals(order.status, "accepted");
    assertEquals(order.brokerOrderId, w.broker.orders[0].id);
    assertEquals(w.broker.placed, 1);
    assertEquals(posts(w), 1, "the broker never saw a second order");
    const replay = await t.order(MARKET, key);
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals((await (await t.list()).json()).orders.length, 1);
  }));

Deno.test("a 5xx the broker confirms it did not act on is 503; a 429 is 503 with the broker's Retry-After", () =>
  withServer({}, async (server, w) => {
    const t = await trader(server.call);
    w.broker.failNext(1, 500); // the order call fails; the lookup then says "no such order"
    const failed = await t.order(MARKET, "server-error-key-1");
    assertEquals(failed.status, 503);
    assertEquals((await failed.json()).error.code, "UPSTREAM_UNAVAILABLE");
    assert(Number(failed.headers.get("retry-after")) >= 1);
    assertEquals(w.broker.placed, 0);

    w.broker.failNext(1, 429);
    const limited = await t.order(MARKET, "rate-limited-key-1");
    assertEquals(limited.status, 503);
    assert(Number(limited.headers.get("retry-after")) >= 1);

    // The retries resume: look up first (none), then place it once.
    const retried = await t.order(MARKET, "server-error-key-1");
    assertEquals(retried.status, 201);
    assertEquals((await t.order(MARKET, "rate-limited-key-1")).status, 201);
    assertEquals(w.broker.placed, 2);
  }));

Deno.test("repeated broker failures open the breaker: 503 CIRCUIT_OPEN with Retry-After and no broker call while open, then one probe closes it", () =>
  withServer({ BROKER_TIMEOUT_MS: "2000" }, async (server, w) => {
    const t = await trader(server.call);
    // Rejections are answers: they never open the breaker.
    w.broker.reject("GME");
    for (let i = 0; i < 6; i++) {
      assertEquals((await t.order({ ...MARKET, symbol: "GME" })).status, 422);
    }
    assertEquals((await t.order(MARKET)).status, 201);

    w.broker.failNext(1_000, 503);
    let open: Response | undefined;
    for (let i = 0; i < 10 && !open; i++) {
      const res = await t.order(MARKET);
      if ((res.status === 503) && (await res.clone().json()).error.code === "CIRCUIT_OPEN") {
        open = res;
      } else await res.body?.cancel();
    }
    assert(open, "the breaker opened");
    assert(Number(open.headers.get("retry-after")) >= 1);
    // While open, orders are refused without a call: the broker would not even be waited for.
    const before = w.broker.calls.length;
    for (let i = 0; i < 3; i++) {
      const refused = await t.order(MARKET);
      assertEquals(refused.status, 503);
      assertEquals((await refused.json()).error.code, "CIRCUIT_OPEN");
      assert(Number(refused.headers.get("retry-after")) >= 1);
    }
    assertEquals(w.broker.calls.length, before, "nothing reached the broker while open");

    w.broker.failNext(0);
    await new Promise((r) => setTimeout(r, 1_100)); // BREAKER_RESET_MS = 1000 in tests
    const probe = await t.order(MARKET);
    assertEquals(probe.status, 201);
    assertEquals((await t.order(MARKET)).status, 201, "closed again");
  }));
