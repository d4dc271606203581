/**
 * The sandbox broker speaks Alpaca's lifecycle endpoints: the open list and its paging, one
 * order, cancel (204, then 422 once closed, 404 unknown) and the fill activity feed with
 * `page_token` paging, each with Alpaca's shapes and errors.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { startBrokerSimulator } from "../../local/sandbox/broker.ts";

const KEYS = { keyId: "sim-key", secretKey: "sim-secret" };
const HEADERS = { "apca-api-key-id": KEYS.keyId, "apca-api-secret-key": KEYS.secretKey };

Deno.test("the broker simulator lists, reads, cancels and reports fills as Alpaca does", async () => {
  const sim = await startBrokerSimulator(KEYS);
  const call = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${sim.url}${path}`, {
      ...init,
      headers: { ...HEADERS, "content-type": "application/json" },
    });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  };
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const placed = await call("/v2/orders", {
        method: "POST",
        body: JSON.stringify({
          symbol: "AAPL",
          side: "buy",
          type: "market",
          qty: "2",
          time_in_force: "day",
          client_order_id: `c-${i}`,
        }),
      });
      assertEquals([placed.status, placed.body.status], [200, "accepted"]);
      ids.push(placed.body.id);
    }
    const open = await call("/v2/orders?status=open&limit=2&direction=desc");
    assertEquals(open.body.map((o: { id: string }) => o.id), [ids[2], ids[1]]);
    assertEquals((await call("/v2/orders?status=open&limit=501")).status, 422);

    assertEquals((await call(`/v2/orders/${ids[0]}`, { method: "DELETE" })).status, 204);
    assertEquals((await call(`/v2/orders/${ids[0]}`)).body.status, "pending_cancel");
    sim.step();
    assertEquals((await call(`/v2/orders/${ids[0]}`)).body.status, "canceled");
    const again = await call(`/v2/orders/${ids[0]}`, { method: "DELETE" });
    assertEquals(again, {
      status: 422,
      body: { code: 42210000, message: "order is not cancelable" },
    });
    assertEquals(
      (await call(`/v2/orders/${crypto.randomUUID()}`, { method: "DELETE" })).status,
      404,
    );
    assertEquals((await call(`/v2/orders/${crypto.randomUUID()}`)).status, 404);

    sim.advance(1_000); // half of each remaining order fills
    sim.advance(1_000); // the rest
    const one = (await call(`/v2/orders/${ids[1]}`)).body;
    assertEquals([one.status, one.filled_qty], ["filled", "2"]);
    assert(Date.parse(one.filled_at) > 0);

    const first = await call("/v2/account/activities/FILL?direction=asc&page_size=3");
    assertEquals(first.body.length, 3);
    assertEquals(first.body[0].type, "partial_fill");
    assertEquals(first.body[0].activity_type, "FILL");
    const rest = await call(
      `/v2/account/activities/FILL?direction=asc&page_size=3&page_token=${
        encodeURIComponent(first.body[2].id)
      }`,
    );
    assertEquals(rest.body.length, 1, "four fills: two orders, two parts each");
    assertEquals([rest.body[0].cum_qty, rest.body[0].leaves_qty, rest.body[0].order_status], [
      "2",
      "0",
      "filled",
    ]);
    // Alpaca's activity ids: the time to the millisecond, `::`, a uuid; a page_token is a place
    // in their order, in either direction, whether or not the page would list it.
    const all = [...first.body, ...rest.body];
    for (const a of all) assertMatch(a.id, /^\d{17}::[0-9a-f-]{36}$/);
    assertEquals(all.map((a) => a.id), all.map((a) => a.id).sort());
    const back = await call(
      `/v2/account/activities/FILL?direction=desc&page_token=${encodeURIComponent(all[2].id)}`,
    );
    assertEquals(back.body.map((a: { id: string }) => a.id), [all[1].id, all[0].id]);
    // The token's own activity is outside `after`: the page still starts right after it.
    const later = await call(
      `/v2/account/activities/FILL?direction=asc&after=${
        encodeURIComponent(all[0].transaction_time)
      }&page_token=${encodeURIComponent(all[0].id)}`,
    );
    assertEquals(later.body.map((a: { id: string }) => a.id), all.slice(1).map((a) => a.id));
    assertEquals((await call("/v2/account/activities/FILL?page_size=101")).status, 422);
    assertEquals((await call("/v2/orders?status=open")).body, []);
  } finally {
    await sim.close();
  }
});

Deno.test("the broker simulator triggers a stop order when the quote reaches its stop price", async () => {
  const sim = await startBrokerSimulator(KEYS);
  try {
    sim.setPrice("TSLA", 200);
    const res = await fetch(`${sim.url}/v2/orders`, {
      method: "POST",
      headers: { ...HEADERS, "content-type": "application/json" },
      body: JSON.stringify({
        symbol: "TSLA",
        side: "sell",
        type: "stop",
        qty: "1",
        stop_price: "190",
        time_in_force: "gtc",
      }),
    });
    const { id } = await res.json();
    sim.advance(60_000);
    assertEquals(sim.orders[0].status, "accepted", "the stop is not reached");
    sim.setPrice("TSLA", 189.5);
    sim.step();
    assertEquals([sim.orders[0].id, sim.orders[0].status, sim.orders[0].filled_avg_price], [
      id,
      "filled",
      "189.5",
    ]);
  } finally {
    await sim.close();
  }
});
