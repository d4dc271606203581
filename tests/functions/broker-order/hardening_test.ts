/**
 * broker-order under the attacks of issue 12: over-precise JSON numbers (point 4), text Postgres
 * cannot hold in a note or a cursor (point 5), and pagination across orders that share a
 * millisecond (point 8). Each test sends the attack and would fail if it worked again.
 */
import postgres from "postgres";
import { assert, assertEquals } from "@std/assert";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { trader, withWorld, type World } from "./harness.ts";

async function withServer(fn: (s: TestServer, w: World) => Promise<void>) {
  await withWorld(async (w) => {
    const server = await startTestServer(w.env(), { only: ["broker-order"] });
    try {
      await fn(server, w);
    } finally {
      await server.close();
    }
  });
}

Deno.test("broker-order keeps a price of 9 decimals exactly and refuses a qty more precise than the column, reading the JSON text", () =>
  withServer(async (server, w) => {
    const t = await trader(server.call);
    // As raw JSON text: JSON.stringify would already round these to doubles.
    const limit = await t.order(
      '{"symbol":"AAPL","side":"buy","type":"limit","qty":1,"limit_price":9999999.999999999,"time_in_force":"day"}',
    );
    assertEquals(limit.status, 201);
    assertEquals((await limit.json()).limitPrice, "9999999.999999999");
    assertEquals(w.broker.orders[0].limit_price, "9999999.999999999", "sent to the broker exactly");

    const precise = await t.order(
      '{"symbol":"AAPL","side":"buy","type":"market","qty":100000000.0000000001,"time_in_force":"day"}',
    );
    assertEquals(precise.status, 400);
    const body = await precise.json();
    assertEquals(body.error.code, "VALIDATION_FAILED");
    assertEquals(body.error.issues[0].path, "qty");
    assertEquals(w.broker.orders.length, 1, "the over-precise order never reached the broker");
  }));

Deno.test("broker-order answers 400, never 500, to a note with a NUL character or a lone surrogate", () =>
  withServer(async (server, w) => {
    const t = await trader(server.call);
    for (const note of ["a\u0000b", "x\ud800y"]) {
      const res = await t.order(
        `{"symbol":"AAPL","side":"buy","type":"market","qty":1,"time_in_force":"day","note":${
          JSON.stringify(note)
        }}`,
      );
      assertEquals(res.status, 400, JSON.stringify(note));
      const body = await res.json();
      assertEquals(body.error.issues[0].path, "note");
    }
    assertEquals(w.broker.calls.length, 0);
  }));

Deno.test("broker-order answers 400 to cursors naming year 0000 or impossible dates", () =>
  withServer(async (server) => {
    const t = await trader(server.call);
    const id = "6f1c1a3e-0000-4000-8000-000000000001";
    for (
      const time of [
        "0000-01-01T00:00:00.000000Z",
        "2026-02-30T00:00:00.000000Z",
        "2026-01-01T24:00:00.000000Z",
        "2026-13-01T00:00:00.000000Z",
      ]
    ) {
      const res = await t.list(`before=${encodeURIComponent(`${time}_${id}`)}`);
      assertEquals(res.status, 400, time);
      assertEquals((await res.json()).error.code, "VALIDATION_FAILED");
    }
  }));

Deno.test("broker-order's cursor keeps microseconds: orders created in the same millisecond are each listed once", () =>
  withServer(async (server, w) => {
    const t = await trader(server.call);
    const sql = postgres(w.db.url, { max: 1, onnotice: () => {} });
    try {
      // Five orders 1 µs apart, all within one millisecond.
      for (let i = 0; i < 5; i++) {
        await sql`
          insert into public.orders (id, user_id, client_order_id, symbol, side, type, qty,
            time_in_force, status, created_at)
          values (${crypto.randomUUID()}, ${t.id}, ${`bo-same-ms-${i}`}, 'AAPL', 'buy', 'market',
            1, 'day', 'accepted', '2026-11-30T12:00:00.123000Z'::timestamptz + ${`${i} microseconds`}::interval)`;
      }
    } finally {
      await sql.end();
    }
    const seen: string[] = [];
    let before: string | null = null;
    for (let page = 0; page < 10; page++) {
      const res = await t.list(
        `limit=2${before ? `&before=${encodeURIComponent(before)}` : ""}`,
      );
      assertEquals(res.status, 200);
      const body: { orders: { clientOrderId: string }[]; nextCursor: string | null } = await res
        .json();
      seen.push(...body.orders.map((o) => o.clientOrderId));
      before = body.nextCursor;
      if (!before) break;
    }
    assertEquals(seen, [4, 3, 2, 1, 0].map((i) => `bo-same-ms-${i}`));
    assert(new Set(seen).size === 5);
  }));
