/**
 * broker-order under issue 25, finding 5: with one Idempotency-Key, a quantity that differs from
 * the first only past a double's precision is another request (422), not a replay of the first.
 */
import { assertEquals } from "@std/assert";
import { startTestServer } from "../../support/server.ts";
import { trader, withWorld } from "./harness.ts";

Deno.test("one Idempotency-Key with quantities that round to the same double: 422 IDEMPOTENCY_KEY_REUSED, not a replay", () =>
  withWorld(async (w) => {
    const server = await startTestServer(w.env({}), { only: ["broker-order"] });
    try {
      const t = await trader(server.call);
      const pairs: [string, string, string][] = [
        ["qty", "99999999.999999999", "99999999.999999998"],
        ["qty", "12345678.123456789", "12345678.123456788"],
        ["notional", "99999999.999999999", "99999999.999999997"],
      ];
      for (const [field, first, second] of pairs) {
        const key = `exact-${crypto.randomUUID()}`;
        const body = (n: string) =>
          `{"symbol":"AAPL","side":"buy","type":"market","${field}":${n},"time_in_force":"day"}`;
        const a = await t.order(body(first), key);
        assertEquals(a.status, 201, await a.clone().text());
        await a.body?.cancel();
        const same = await t.order(body(first.replace(/$/, "0")), key);
        assertEquals(
          same.headers.get("idempotent-replayed"),
          "true",
          "a trailing zero is the same",
        );
        await same.body?.cancel();
        const b = await t.order(body(second), key);
        assertEquals(b.status, 422, `${field} ${first} then ${second}`);
        assertEquals((await b.json()).error.code, "IDEMPOTENCY_KEY_REUSED");
      }
    } finally {
      await server.close();
    }
  }));

Deno.test("a user's sub in another letter case is the same owner: its orders, its keys", () =>
  withWorld(async (w) => {
    const server = await startTestServer(w.env({}), { only: ["broker-order"] });
    try {
      const id = crypto.randomUUID();
      const lower = await trader(server.call, id);
      const upper = await trader(server.call, id.toUpperCase());
      const mixed = await trader(server.call, id.replace(/[a-f]/g, (ch) => ch.toUpperCase()));
      const key = `case-${crypto.randomUUID()}`;
      const body = { symbol: "AAPL", side: "buy", type: "market", qty: 1, time_in_force: "day" };
      const first = await lower.order(body, key);
      assertEquals(first.status, 201);
      const placed = await first.json();
      for (const other of [upper, mixed]) {
        const replay = await other.order(body, key);
        assertEquals(replay.headers.get("idempotent-replayed"), "true", "the same owner's key");
        assertEquals((await replay.json()).id, placed.id);
        const list = await (await other.list()).json();
        assertEquals(list.orders.map((o: { id: string }) => o.id), [placed.id]);
      }
      assertEquals(w.broker.orders.length, 1, "one order at the broker");
    } finally {
      await server.close();
    }
  }));
