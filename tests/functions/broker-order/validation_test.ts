/**
 * broker-order: what a request may be (Alpaca's order rules, strictly), the guards in front of
 * it, and who sees which orders (the function's GET and row-level security).
 */
import type { Tx } from "../../../shared/db/db.ts";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { serviceToken } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { MARKET, trader, withWorld, type World } from "./harness.ts";

async function withServer(fn: (s: TestServer, w: World) => Promise<void>) {
  await withWorld(async (w) => {
    const server = await startTestServer(w.env({ BODY_LIMIT_BYTES: "4096" }), {
      only: ["broker-order"],
    });
    try {
      await fn(server, w);
    } finally {
      await server.close();
    }
  });
}

/** Bodies that must be refused, and the field the refusal must name. */
const INVALID: [string, Record<string, unknown>, string][] = [
  ["qty and notional together", { ...MARKET, notional: 100 }, "notional"],
  ["neither qty nor notional", { ...MARKET, qty: undefined }, "qty"],
  ["notional on a limit order", {
    ...MARKET,
    qty: undefined,
    notional: 100,
    type: "limit",
    limit_price: 10,
  }, "notional"],
  [
    "notional with gtc",
    { ...MARKET, qty: undefined, notional: 100, time_in_force: "gtc" },
    "notional",
  ],
  ["a limit order without limit_price", { ...MARKET, type: "limit" }, "limit_price"],
  ["a stop order without stop_price", { ...MARKET, type: "stop" }, "stop_price"],
  [
    "a stop_limit order without stop_price",
    { ...MARKET, type: "stop_limit", limit_price: 10 },
    "stop_price",
  ],
  [
    "a stop_limit order without limit_price",
    { ...MARKET, type: "stop_limit", stop_price: 10 },
    "limit_price",
  ],
  ["a market order with a limit_price", { ...MARKET, limit_price: 10 }, "limit_price"],
  ["a market order with a stop_price", { ...MARKET, stop_price: 10 }, "stop_price"],
  [
    "a limit order with a stop_price",
    { ...MARKET, type: "limit", limit_price: 10, stop_price: 9 },
    "stop_price",
  ],
  ["a negative qty", { ...MARKET, qty: -1 }, "qty"],
  ["a zero qty", { ...MARKET, qty: "0.000" }, "qty"],
  ["a qty that is not a number", { ...MARKET, qty: "ten" }, "qty"],
  ["a qty that is a boolean", { ...MARKET, qty: true }, "qty"],
  ["a qty with 10 decimals", { ...MARKET, qty: "1.0000000001" }, "qty"],
  ["a qty as a tiny float", { ...MARKET, qty: 1e-10 }, "qty"],
  ["a qty over the bound", { ...MARKET, qty: "100000000.5" }, "qty"],
  ["a huge qty", { ...MARKET, qty: 1e300 }, "qty"],
  ["a notional over the bound", { ...MARKET, qty: undefined, notional: "100000001" }, "notional"],
  [
    "a limit_price over the bound",
    { ...MARKET, type: "limit", limit_price: 10_000_001 },
    "limit_price",
  ],
  ["a qty in exponent text", { ...MARKET, qty: "1e3" }, "qty"],
  ["a lower-case symbol", { ...MARKET, symbol: "aapl" }, "symbol"],
  ["a symbol starting with a digit", { ...MARKET, symbol: "1ABC" }, "symbol"],
  ["a symbol over 10 characters", { ...MARKET, symbol: "ABCDEFGHIJK" }, "symbol"],
  ["a symbol with a slash", { ...MARKET, symbol: "BTC/USD" }, "symbol"],
  ["a missing symbol", { ...MARKET, symbol: undefined }, "symbol"],
  ["side hold", { ...MARKET, side: "hold" }, "side"],
  ["type trailing_stop", { ...MARKET, type: "trailing_stop" }, "type"],
  ["time_in_force gtd", { ...MARKET, time_in_force: "gtd" }, "time_in_force"],
  ["an unknown field", { ...MARKET, extended_hours: true }, "(root)"],
  ["a client-chosen client_order_id", { ...MARKET, client_order_id: "mine" }, "(root)"],
  ["a note over 500 characters", { ...MARKET, note: "x".repeat(501) }, "note"],
  ["a note that is not text", { ...MARKET, note: 5 }, "note"],
];

Deno.test("broker-order refuses each invalid order with 400 naming the field, and changes nothing", () =>
  withServer(async (server, w) => {
    const t = await trader(server.call);
    for (const [what, body, field] of INVALID) {
      const res = await t.order(body);
      assertEquals(res.status, 400, what);
      const { error } = await res.json();
      assertEquals(error.code, "VALIDATION_FAILED", what);
      assert(
        error.issues.some((i: { path: string }) => i.path === field),
        `${what}: ${JSON.stringify(error.issues)}`,
      );
    }
    for (const raw of ["{not json", "[]", "null", '"AAPL"']) {
      const res = await t.order(raw);
      assertEquals(res.status, 400, raw);
    }
    assertEquals(w.broker.calls.length, 0, "nothing reached the broker");
    const listed = await (await t.list()).json();
    assertEquals(listed.orders, []);
    const [{ n }] = await server.platform.db.query((sql) =>
      sql`select count(*)::int as n from internal.idempotency_keys`
    );
    assertEquals(n, 0, "no key was claimed by a bad request");
  }));

Deno.test("broker-order accepts Alpaca's valid shapes and answers decimals as canonical strings", () =>
  withServer(async (server, w) => {
    const t = await trader(server.call);
    const cases: [Record<string, unknown>, Record<string, unknown>][] = [
      [{ ...MARKET, qty: "0.000000001" }, { qty: "0.000000001" }],
      [{ ...MARKET, qty: 1e-7 }, { qty: "0.0000001" }],
      [{ ...MARKET, qty: "100000000" }, { qty: "100000000" }],
      [{ ...MARKET, qty: undefined, notional: "250.50" }, { qty: null, notional: "250.5" }],
      [{ ...MARKET, symbol: "BRK.B", side: "sell", time_in_force: "opg" }, { symbol: "BRK.B" }],
      [{ ...MARKET, type: "limit", limit_price: "187.25", time_in_force: "gtc" }, {
        limitPrice: "187.25",
        stopPrice: null,
      }],
      [{ ...MARKET, type: "stop", stop_price: 150, time_in_force: "ioc" }, { stopPrice: "150" }],
      [
        {
          ...MARKET,
          type: "stop_limit",
          stop_price: 150,
          limit_price: 149.5,
          time_in_force: "fok",
        },
        {
          stopPrice: "150",
          limitPrice: "149.5",
        },
      ],
      [{ ...MARKET, note: "n".repeat(500), time_in_force: "cls" }, { note: "n".repeat(500) }],
    ];
    for (const [body, expected] of cases) {
      const res = await t.order(body);
      const json = await res.json();
      assertEquals(res.status, 201, JSON.stringify({ body, json }));
      for (const [k, v] of Object.entries(expected)) {
        assertEquals(json[k], v, `${k} of ${JSON.stringify(body)}`);
      }
    }
    assertEquals(w.broker.placed, cases.length);
    // What reached the broker is what was validated, as Alpaca's decimal strings.
    assertEquals(w.broker.orders[1].qty, "0.0000001");
    assertEquals(w.broker.orders[3].notional, "250.5");
  }));

Deno.test("broker-order stores the note as plain text: HTML stripped, scripts dropped", () =>
  withServer(async (server) => {
    const t = await trader(server.call);
    const res = await t.order({
      ...MARKET,
      note: '<b>Buy</b> <script>alert("x")</script><img src=x onerror=alert(1)>the dip &amp; hold',
    });
    assertEquals(res.status, 201);
    const order = await res.json();
    assertEquals(order.note, "Buy the dip & hold");
    const listed = await (await t.list()).json();
    assertEquals(listed.orders[0].note, "Buy the dip & hold");
  }));

Deno.test("broker-order guards: 401 without a user token, 403 for a service token, 415, 413, 405", () =>
  withServer(async (server, w) => {
    const anonymous = await server.call("broker-order", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "key-12345678" },
      body: JSON.stringify(MARKET),
    });
    assertEquals(anonymous.status, 401);
    const service = await server.call("broker-order", {
      method: "POST",
      headers: {
        authorization: `Bearer ${await serviceToken()}`,
        "content-type": "application/json",
        "idempotency-key": "key-12345678",
      },
      body: JSON.stringify(MARKET),
    });
    assertEquals(service.status, 403);
    const t = await trader(server.call);
    const form = await t.order("symbol=AAPL", "key-12345678", {
      "content-type": "application/x-www-form-urlencoded",
    });
    assertEquals(form.status, 415);
    const big = await t.order({ ...MARKET, pad: "x".repeat(5000) });
    assertEquals(big.status, 413);
    const put = await server.call("broker-order", {
      method: "PUT",
      headers: { authorization: `Bearer ${t.token}` },
    });
    assertEquals(put.status, 405);
    assertStringIncludes(put.headers.get("allow") ?? "", "POST");
    const noKey = await t.order(MARKET, null);
    assertEquals(noKey.status, 400);
    assertEquals((await noKey.json()).error.code, "IDEMPOTENCY_KEY_REQUIRED");
    const badKey = await t.order(MARKET, "short");
    assertEquals(badKey.status, 400);
    assertEquals((await badKey.json()).error.code, "IDEMPOTENCY_KEY_INVALID");
    assertEquals(w.broker.calls.length, 0);
  }));

Deno.test("GET lists only the caller's orders, newest first, in pages; bad page parameters are 400", () =>
  withServer(async (server) => {
    const alice = await trader(server.call);
    const bob = await trader(server.call);
    const placed: string[] = [];
    for (const symbol of ["AAPL", "MSFT", "NVDA"]) {
      const res = await alice.order({ ...MARKET, symbol });
      assertEquals(res.status, 201);
      placed.push((await res.json()).id);
    }
    assertEquals((await bob.order({ ...MARKET, symbol: "TSLA" })).status, 201);

    const all = await (await alice.list()).json();
    assertEquals(all.orders.map((o: { symbol: string }) => o.symbol), ["NVDA", "MSFT", "AAPL"]);
    assertEquals(all.nextCursor, null);
    const bobs = await (await bob.list()).json();
    assertEquals(bobs.orders.map((o: { symbol: string }) => o.symbol), ["TSLA"]);

    const page1 = await (await alice.list("limit=2")).json();
    assertEquals(page1.orders.map((o: { id: string }) => o.id), [placed[2], placed[1]]);
    assert(typeof page1.nextCursor === "string");
    const page2 = await (await alice.list(`limit=2&before=${encodeURIComponent(page1.nextCursor)}`))
      .json();
    assertEquals(page2.orders.map((o: { id: string }) => o.id), [placed[0]]);
    assertEquals(page2.nextCursor, null);

    for (const q of ["limit=0", "limit=101", "limit=abc", "before=yesterday", "sort=asc"]) {
      const res = await alice.list(q);
      assertEquals(res.status, 400, q);
      assertEquals((await res.json()).error.code, "VALIDATION_FAILED");
    }
    const anonymous = await server.call("broker-order");
    assertEquals(anonymous.status, 401);
  }));

Deno.test("row-level security: as `authenticated`, a user selects only their own orders and writes none", () =>
  withServer(async (server) => {
    const alice = await trader(server.call);
    const bob = await trader(server.call);
    assertEquals((await alice.order(MARKET)).status, 201);
    assertEquals((await alice.order({ ...MARKET, symbol: "MSFT" })).status, 201);
    assertEquals((await bob.order({ ...MARKET, symbol: "TSLA" })).status, 201);

    // The server's own pool (PGlite serves one connection), as PostgREST would: role and claims.
    const as = <T>(role: string, sub: string | null, q: (tx: Tx) => Promise<T>) =>
      server.platform.db.transaction(async (tx) => {
        await tx.unsafe(`set local role ${role}`);
        if (sub) {
          await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub })}, true)`;
        }
        return await q(tx);
      });
    {
      const mine = await as(
        "authenticated",
        alice.id,
        (tx) => tx`select symbol, user_id from orders order by symbol`,
      );
      assertEquals(mine.map((r) => r.symbol), ["AAPL", "MSFT"]);
      assert(mine.every((r) => r.user_id === alice.id));
      const bobs = await as("authenticated", bob.id, (tx) => tx`select symbol from orders`);
      assertEquals(bobs.map((r) => r.symbol), ["TSLA"]);
      const nobody = await as("authenticated", null, (tx) => tx`select symbol from orders`);
      assertEquals(nobody.length, 0);
      for (
        const [role, write] of [
          ["authenticated", "update orders set status = 'filled'"],
          ["authenticated", "delete from orders"],
          ["anon", "select * from orders"],
          ["authenticated", "select * from internal.idempotency_keys"],
        ]
      ) {
        let code = "";
        await as(role, alice.id, (tx) => tx.unsafe(write)).catch((e) => code = e.code);
        assertEquals(code, "42501", `${role}: ${write}`);
      }
      let insertCode = "";
      await as(
        "authenticated",
        alice.id,
        (tx) =>
          tx`insert into orders (id, user_id, client_order_id, symbol, side, type, qty, time_in_force, status)
           values (gen_random_uuid(), ${alice.id}, 'x', 'AAPL', 'buy', 'market', 1, 'day', 'new')`,
      ).catch((e) => insertCode = e.code);
      assertEquals(insertCode, "42501");
    }
  }));
