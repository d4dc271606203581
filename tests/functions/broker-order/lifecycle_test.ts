/**
 * An order after it is placed (issue 23), through the real server against the simulated broker,
 * whose clock the tests move: fills (partial, then whole), a limit crossing, a day order's
 * expiry, the sync resolving pending orders, cancels, the sync's broker reads counted, and the
 * broker failing during a sync.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { serviceToken } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { MARKET, trader, withWorld, type World } from "./harness.ts";

async function withServer(
  extra: Record<string, string>,
  fn: (s: TestServer, w: World, sync: () => Promise<Response>) => Promise<void>,
) {
  await withWorld(async (w) => {
    const server = await startTestServer(w.env({ ORDER_RATE_LIMIT: "1000", ...extra }), {
      only: ["broker-order"],
    });
    const token = await serviceToken();
    const sync = () =>
      server.call("broker-order/sync", {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      });
    try {
      await fn(server, w, sync);
    } finally {
      await server.close();
    }
  });
}

/** Runs the sync and answers its body (200 asserted). */
async function synced(sync: () => Promise<Response>) {
  const res = await sync();
  assertEquals(res.status, 200, await res.clone().text());
  return await res.json();
}

const reads = (w: World, from: number) =>
  w.broker.calls.slice(from).filter((c) => c.startsWith("GET")).length;

const FIELDS = [
  "id",
  "clientOrderId",
  "brokerOrderId",
  "status",
  "symbol",
  "side",
  "type",
  "qty",
  "notional",
  "limitPrice",
  "stopPrice",
  "timeInForce",
  "note",
  "filledQty",
  "filledAvgPrice",
  "filledAt",
  "canceledAt",
  "expiredAt",
  "rejectReason",
  "createdAt",
  "updatedAt",
];

Deno.test("an order follows the broker: accepted, partially_filled, then filled, its decimals exact; POST, GET one and the list answer one shape", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    const placed = await (await t.order({ ...MARKET, qty: 3 })).json();
    assertEquals(Object.keys(placed), FIELDS);
    assertEquals([placed.status, placed.filledQty, placed.filledAvgPrice], ["accepted", "0", null]);
    assertEquals([placed.filledAt, placed.canceledAt, placed.expiredAt], [null, null, null]);

    w.broker.setPrice("AAPL", 187.123456789);
    w.broker.advance(1_000); // half of the whole shares fill first
    assertEquals((await synced(sync)).changed, 1);
    const partial = await (await t.one(placed.id)).json();
    assertEquals(Object.keys(partial), FIELDS);
    assertEquals([partial.status, partial.filledQty, partial.filledAvgPrice], [
      "partially_filled",
      "1",
      "187.123456789",
    ]);
    assert(partial.updatedAt > placed.updatedAt);

    w.broker.setPrice("AAPL", 187.5);
    w.broker.advance(1_000);
    assertEquals((await synced(sync)).changed, 1);
    const filled = await (await t.one(placed.id)).json();
    assertEquals([filled.status, filled.filledQty], ["filled", "3"]);
    // The feed's fills, averaged exactly: (1 × 187.123456789 + 2 × 187.5) / 3, rounded at the
    // 20th decimal (it does not terminate), not the broker's float-rounded "187.374485596".
    assertEquals(filled.filledAvgPrice, "187.37448559633333333333");
    assertMatch(filled.filledAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    const listed = (await (await t.list()).json()).orders;
    assertEquals(listed, [filled]);

    // Nothing new: a run changes nothing.
    assertEquals((await synced(sync)).changed, 0);
  }));

Deno.test("a limit order fills when the quote crosses its price; a day order expires; both are followed", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    w.broker.setPrice("MSFT", 400);
    const limit = await (await t.order({
      symbol: "MSFT",
      side: "buy",
      type: "limit",
      qty: 2,
      limit_price: "395.5",
      time_in_force: "gtc",
    })).json();
    const day = await (await t.order({
      symbol: "MSFT",
      side: "buy",
      type: "limit",
      qty: 1,
      limit_price: "300",
      time_in_force: "day",
    })).json();
    w.broker.advance(60_000);
    assertEquals((await synced(sync)).changed, 0, "nothing crossed yet");
    w.broker.setPrice("MSFT", 395);
    w.broker.step();
    w.broker.advance(7 * 3_600_000); // the day order's session ends
    const run = await synced(sync);
    assertEquals(run.changed, 2);
    const a = await (await t.one(limit.id)).json();
    assertEquals([a.status, a.filledQty, a.filledAvgPrice], ["filled", "2", "395.01"]);
    const b = await (await t.one(day.id)).json();
    assertEquals([b.status, b.filledQty, b.filledAvgPrice], ["expired", "0", null]);
    assertMatch(b.expiredAt, /Z$/);
  }));

Deno.test("the sync resolves a pending order by client_order_id with no client retry and no second submission", () =>
  withServer({ BROKER_TIMEOUT_MS: "300" }, async (server, w, sync) => {
    w.broker.delayMs = 2_000;
    w.broker.lookupDelayMs = 2_000;
    const t = await trader(server.call);
    const res = await t.order(MARKET, "pending-by-sync-01");
    assertEquals(res.status, 202);
    const pending = await res.json();
    assertEquals(pending.status, "pending_confirmation");
    w.broker.delayMs = 0;
    w.broker.lookupDelayMs = 0;
    const run = await synced(sync);
    assertEquals([run.pending, run.changed, run.notPlaced], [1, 1, 0]);
    const order = await (await t.one(pending.id)).json();
    assertEquals(order.status, "accepted");
    assertEquals(order.brokerOrderId, w.broker.orders[0].id);
    assertEquals(w.broker.placed, 1);
    assertEquals(w.broker.calls.filter((c) => c.startsWith("POST")).length, 1);
  }));

Deno.test("a pending order absent at the broker becomes not_placed only after the absence window; only then does a retry with its key submit it, once", () =>
  withServer({ ORDER_ABSENT_AFTER_SECONDS: "2" }, async (server, w, sync) => {
    w.broker.down = true; // the order call and its lookup both fail: outcome unknown
    const t = await trader(server.call);
    const key = "absent-order-key-01";
    const res = await t.order(MARKET, key);
    assertEquals(res.status, 202);
    const pending = await res.json();
    w.broker.down = false;

    // Too young to be provably absent: the sync leaves it, and a retry does not send it.
    assertEquals((await synced(sync)).notPlaced, 0);
    const early = await t.order(MARKET, key);
    assertEquals(early.status, 202);
    assertEquals((await early.json()).status, "pending_confirmation");
    assertEquals(w.broker.placed, 0);

    await new Promise((r) => setTimeout(r, 2_100));
    const run = await synced(sync);
    assertEquals([run.notPlaced, run.changed], [1, 1]);
    assertEquals((await (await t.one(pending.id)).json()).status, "not_placed");
    assertEquals((await synced(sync)).open, 0, "not_placed is terminal: no longer synced");

    const retry = await t.order(MARKET, key);
    assertEquals(retry.status, 201);
    const placed = await retry.json();
    assertEquals([placed.id, placed.status], [pending.id, "accepted"]);
    assertEquals(w.broker.placed, 1);
    const again = await t.order(MARKET, key);
    assertEquals(again.headers.get("idempotent-replayed"), "true");
    assertEquals(w.broker.placed, 1, "submitted once");
  }));

Deno.test("cancel: the owner's open order is 200 pending_cancel then canceled; a repeat is harmless; another user's or an unknown id is 404", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    const other = await trader(server.call);
    const order = await (await t.order({ ...MARKET, type: "limit", limit_price: 1 })).json();

    const theirs = await other.cancel(order.id);
    assertEquals(theirs.status, 404);
    assertEquals((await theirs.json()).error.code, "NOT_FOUND");
    assertEquals((await t.cancel(crypto.randomUUID())).status, 404);
    assertEquals((await t.cancel("not-a-uuid")).status, 404);
    assertEquals(w.broker.calls.filter((c) => c.startsWith("DELETE")).length, 0);

    const res = await t.cancel(order.id);
    assertEquals(res.status, 200);
    assert(res.headers.get("ratelimit")?.startsWith('"orders"'), "the per-user limit counts it");
    const canceling = await res.json();
    assertEquals(canceling.status, "pending_cancel");
    assertEquals(canceling.id, order.id);

    w.broker.step(); // the broker completes the cancel
    assertEquals((await synced(sync)).changed, 1);
    const canceled = await (await t.one(order.id)).json();
    assertEquals(canceled.status, "canceled");
    assertMatch(canceled.canceledAt, /Z$/);

    const calls = w.broker.calls.length;
    const repeat = await t.cancel(order.id);
    assertEquals(repeat.status, 200);
    assertEquals((await repeat.json()).status, "canceled");
    assertEquals(
      w.broker.calls.length,
      calls,
      "a repeat on a canceled order asks the broker nothing",
    );
  }));

Deno.test("cancel after a fill is 409 ORDER_NOT_CANCELABLE; a cancel racing a fill ends in what the broker decided", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    const first = await (await t.order(MARKET)).json();
    w.broker.fillNow(first.brokerOrderId);
    await synced(sync);
    const late = await t.cancel(first.id);
    assertEquals(late.status, 409);
    assertEquals((await late.json()).error.code, "ORDER_NOT_CANCELABLE");

    // The broker filled it; our row still says accepted when the cancel arrives.
    const racing = await (await t.order(MARKET)).json();
    w.broker.fillNow(racing.brokerOrderId);
    const res = await t.cancel(racing.id);
    assertEquals(res.status, 409);
    assertEquals(
      (await res.json()).error.message,
      "The order can no longer be canceled: it is filled.",
    );
    const stored = await (await t.one(racing.id)).json();
    assertEquals([stored.status, stored.filledQty], ["filled", "1"], "the broker's fill stands");

    // A pending order has no broker order to cancel yet.
    w.broker.down = true;
    const pending = await (await t.order(MARKET)).json();
    w.broker.down = false;
    const early = await t.cancel(pending.id);
    assertEquals(early.status, 409);
    assert(Number(early.headers.get("retry-after")) > 0);
  }));

Deno.test("the sync's broker reads grow with changes, not open orders: a quiet run over 120 open orders reads the feed once and the open list once a page; three fills add no read", () =>
  withServer({ ORDER_SYNC_PAGE_SIZE: "50" }, async (server, w, sync) => {
    const t = await trader(server.call);
    const ids: string[] = [];
    for (let i = 0; i < 120; i++) {
      const res = await t.order({ ...MARKET, type: "limit", limit_price: 1, time_in_force: "gtc" });
      assertEquals(res.status, 201);
      ids.push((await res.json()).brokerOrderId);
    }
    let from = w.broker.calls.length;
    const quiet = await synced(sync);
    assertEquals([quiet.open, quiet.changed, quiet.brokerReads], [120, 0, 4]);
    assertEquals(reads(w, from), 4, "the feed, then three pages of 50, nothing else");

    for (const id of ids.slice(0, 3)) w.broker.fillNow(id);
    from = w.broker.calls.length;
    const busy = await synced(sync);
    assertEquals([busy.changed, busy.fills, busy.brokerReads], [3, 3, 4]);
    assertEquals(reads(w, from), 4, "the feed says which orders filled: none is read on its own");
    assertEquals((await synced(sync)).open, 117);
  }));

Deno.test("a run that sees hundreds of fills reads the broker about fills/100 + a handful of times, and the next run reads none of them again", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    const orders: { id: string }[] = [];
    for (let i = 0; i < 260; i++) {
      const res = await t.order({ ...MARKET, qty: i % 10 === 0 ? 2 : 1 });
      assertEquals(res.status, 201);
      orders.push(await res.json());
    }
    w.broker.setPrice("AAPL", 187.25);
    w.broker.advance(1_000); // every order fills (the 2-share ones half first)
    w.broker.advance(1_000);
    const fills = w.broker.fills.length;
    assertEquals(fills, 260 + 26);
    let from = w.broker.calls.length;
    const run = await synced(sync);
    assertEquals([run.open, run.changed, run.fills, run.stopped], [260, 260, fills, null]);
    // ⌈287 / 100⌉ = 3 pages of the feed, one of the open list, no order read on its own.
    assertEquals(run.brokerReads, 4);
    assertEquals(reads(w, from), 4);
    const list = (await (await t.list("limit=100")).json()).orders;
    assert(list.every((o: { status: string }) => o.status === "filled"), JSON.stringify(list));
    const two = list.find((o: { qty: string }) => o.qty === "2");
    assertEquals([two.filledQty, two.filledAvgPrice], ["2", "187.25"]);

    // Nothing open, nothing to read; then one more order: the feed from the cursor on.
    from = w.broker.calls.length;
    const quiet = await synced(sync);
    assertEquals([quiet.open, quiet.brokerReads, reads(w, from)], [0, 0, 0]);
    const more = await (await t.order(MARKET)).json();
    w.broker.advance(1_000);
    from = w.broker.calls.length;
    const next = await synced(sync);
    assertEquals([next.changed, next.fills, next.brokerReads], [1, 1, 2]);
    const feed = w.broker.calls.slice(from).filter((c) => c.includes("/activities/"));
    assertEquals(feed.length, 1);
    assertEquals((await (await t.one(more.id)).json()).status, "filled");
  }));

Deno.test("the broker down during a sync changes nothing: 503 with Retry-After, then the next run catches up", () =>
  withServer({}, async (server, w, sync) => {
    const t = await trader(server.call);
    const order = await (await t.order(MARKET)).json();
    w.broker.fillNow(order.brokerOrderId);
    w.broker.down = true;
    const res = await sync();
    assertEquals(res.status, 503);
    assertEquals((await res.json()).error.code, "UPSTREAM_UNAVAILABLE");
    assert(Number(res.headers.get("retry-after")) >= 1);
    assertEquals((await (await t.one(order.id)).json()).status, "accepted");

    // Failures open the breaker: the sync then fails fast without calling the broker.
    let code = "";
    for (let i = 0; i < 10 && code !== "CIRCUIT_OPEN"; i++) {
      const r = await sync();
      assertEquals(r.status, 503);
      code = (await r.json()).error.code;
    }
    assertEquals(code, "CIRCUIT_OPEN");
    w.broker.down = false;
    await new Promise((r) => setTimeout(r, 1_100)); // BREAKER_RESET_MS = 1000 in tests
    assertEquals((await synced(sync)).changed, 1);
    assertEquals((await (await t.one(order.id)).json()).status, "filled");
  }));

Deno.test("the broker's request budget holds across instances: a run that spends it stops early and says so; the other instance reads nothing", () =>
  withServer({ BROKER_API_RATE_LIMIT: "3" }, async (server, w, sync) => {
    const t = await trader(server.call);
    // Day orders that expire: they leave the open list with no fill, each read on its own.
    for (let i = 0; i < 5; i++) {
      await t.order({ ...MARKET, type: "limit", limit_price: 1, time_in_force: "day" });
    }
    w.broker.advance(7 * 3_600_000);
    const run = await synced(sync);
    // The feed, the open list, one order: the budget of 3 is spent.
    assertEquals([run.brokerReads, run.changed, run.stopped], [3, 1, "broker_rate_budget"]);

    const other = await startTestServer(w.env({ BROKER_API_RATE_LIMIT: "3" }), {
      only: ["broker-order"],
    });
    try {
      const from = w.broker.calls.length;
      const res = await other.call("broker-order/sync", {
        method: "POST",
        headers: { authorization: `Bearer ${await serviceToken()}` },
      });
      assertEquals(res.status, 200);
      const body = await res.json();
      assertEquals([body.brokerReads, body.changed, body.stopped], [0, 0, "broker_rate_budget"]);
      assertEquals(w.broker.calls.length, from, "no broker call past the shared budget");
    } finally {
      await other.close();
    }
  }));

Deno.test("two instances syncing at once apply each change once and end in the broker's state", () =>
  withServer({}, async (server, w, sync) => {
    const other = await startTestServer(w.env({ ORDER_RATE_LIMIT: "1000" }), {
      only: ["broker-order"],
    });
    try {
      const t = await trader(server.call);
      const orders: { id: string; brokerOrderId: string }[] = [];
      for (let i = 0; i < 6; i++) orders.push(await (await t.order({ ...MARKET, qty: 4 })).json());
      for (const o of orders.slice(0, 4)) w.broker.fillNow(o.brokerOrderId, "1");
      for (const o of orders.slice(0, 2)) w.broker.fillNow(o.brokerOrderId);
      const token = await serviceToken();
      const runs = await Promise.all([
        sync(),
        other.call("broker-order/sync", {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
        }),
      ]);
      const bodies = await Promise.all(runs.map((r) => r.json()));
      assertEquals(runs.map((r) => r.status), [200, 200]);
      assertEquals(bodies[0].changed + bodies[1].changed, 4, JSON.stringify(bodies));
      const states = await Promise.all(orders.map(async (o) => (await (await t.one(o.id)).json())));
      assertEquals(states.map((s) => [s.status, s.filledQty]), [
        ["filled", "4"],
        ["filled", "4"],
        ["partially_filled", "1"],
        ["partially_filled", "1"],
        ["accepted", "0"],
        ["accepted", "0"],
      ]);
    } finally {
      await other.close();
    }
  }));

Deno.test("POST /sync is for service callers: 401 without a token, 403 for a user", () =>
  withServer({}, async (server) => {
    const t = await trader(server.call);
    assertEquals((await server.call("broker-order/sync", { method: "POST" })).status, 401);
    const res = await server.call("broker-order/sync", {
      method: "POST",
      headers: { authorization: `Bearer ${t.token}` },
    });
    assertEquals(res.status, 403);
  }));
