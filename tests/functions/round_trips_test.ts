/**
 * Database round trips per request, pinned (issues 13 and 23): the server talks to Postgres through the
 * TCP fault proxy, which counts client sends that follow a server answer. On the platform the
 * database is never on loopback, so each round trip is paid in latency on every request; a count
 * is deterministic where a time is not. Counted only during the request (the platform's probe
 * and migrations on connect are not), after one warm-up request, so background housekeeping that
 * runs once per interval is not counted either.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { type BrokerSimulator, startBrokerSimulator } from "../../local/sandbox/broker.ts";
import { startMarketDataSimulator } from "../../local/sandbox/market_data.ts";
import { freshDatabase } from "../support/db.ts";
import { FRONTEND, serviceToken, testEnv, userToken } from "../support/env.ts";
import { type FaultProxy, startFaultProxy } from "../support/fault_proxy.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import {
  checkoutCompleted,
  delivery,
  SECRET,
  STRIPE_KEY,
  webhookEnv,
} from "./payment-webhook/stripe_events.ts";
import { type SimulatedEvent, startStripeSimulator } from "../../local/sandbox/stripe.ts";

interface World {
  server: TestServer;
  broker: BrokerSimulator;
  /** Another server on the same database (its in-process cache empty). */
  another(): Promise<TestServer>;
  proxy: FaultProxy;
  /** Round trips `request` made (its response body read to the end). */
  count(request: () => Promise<Response>): Promise<{ roundTrips: number; res: Response }>;
}

/** One server with broker-order, payment-webhook, market-data and status, its database behind the proxy. */
async function withWorld(fn: (w: World) => Promise<void>) {
  const db = await freshDatabase({ migrated: true });
  const target = new URL(db.url);
  const proxy = await startFaultProxy({ hostname: target.hostname, port: Number(target.port) });
  const broker = await startBrokerSimulator({ keyId: "rt-key-id", secretKey: "rt-secret" });
  const quotes = await startMarketDataSimulator({
    keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
    secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
  });
  try {
    const env = testEnv(proxy.url(db.url), {
      ...webhookEnv(),
      BROKER_API_URL: broker.url,
      BROKER_API_KEY_ID: "rt-key-id",
      BROKER_API_SECRET_KEY: "rt-secret",
      MARKET_DATA_API_URL: quotes.url,
      MARKET_DATA_API_KEY_ID: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
      MARKET_DATA_API_SECRET_KEY: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
    });
    const only = ["broker-order", "payment-webhook", "market-data", "status"];
    const server = await startTestServer(env, { only });
    const others: TestServer[] = [];
    try {
      await fn({
        server,
        broker,
        async another() {
          const other = await startTestServer(env, { only });
          others.push(other);
          return other;
        },
        proxy,
        async count(request) {
          proxy.resetRoundTrips();
          const res = await request();
          const body = await res.arrayBuffer();
          const roundTrips = proxy.roundTrips;
          return { roundTrips, res: new Response(body, res) };
        },
      });
    } finally {
      for (const other of others) await other.close();
      await server.close();
    }
  } finally {
    await proxy.close();
    await quotes.close();
    await broker.close();
    await db.close();
  }
}

function order(server: TestServer, token: string, key = crypto.randomUUID()) {
  return server.call("broker-order", {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      origin: FRONTEND,
      "idempotency-key": key,
    },
    body: JSON.stringify({
      symbol: "AAPL",
      side: "buy",
      type: "market",
      qty: 1,
      time_in_force: "day",
    }),
  });
}

Deno.test("round trips: a new order takes at most 2 (limit and claim; order and key), a replay 1, the list 1", async () => {
  await withWorld(async ({ server, count }) => {
    const token = await userToken();
    assertEquals((await order(server, token)).status, 201); // warm-up: first purges run
    const key = crypto.randomUUID();
    const placed = await count(() => order(server, token, key));
    assertEquals(placed.res.status, 201);
    assert(placed.roundTrips <= 2, `a new order took ${placed.roundTrips} round trips`);
    assert(placed.roundTrips >= 1, "the proxy saw the order's statements");

    const replay = await count(() => order(server, token, key));
    assertEquals(replay.res.headers.get("idempotent-replayed"), "true");
    assertEquals(replay.roundTrips, 1, "a replay is the one claim statement");

    const list = await count(() =>
      server.call("broker-order?limit=1", {
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      })
    );
    assertEquals(list.res.status, 200);
    assertEquals((await list.res.json()).orders.length, 1);
    assertEquals(list.roundTrips, 1, "the order list is one statement");
  });
});

Deno.test("round trips: a webhook event is claimed, applied and recorded in at most 2; a duplicate too", async () => {
  await withWorld(async ({ server, count }) => {
    await (await server.call("payment-webhook", await delivery(checkoutCompleted()))).body
      ?.cancel();
    const event = checkoutCompleted();
    const first = await count(async () => server.call("payment-webhook", await delivery(event)));
    assertEquals(await first.res.json(), { received: true });
    assert(first.roundTrips <= 2, `a webhook took ${first.roundTrips} round trips`);
    assert(first.roundTrips >= 1, "the proxy saw the webhook's statements");
    const again = await count(async () => server.call("payment-webhook", await delivery(event)));
    assertEquals(await again.res.json(), { received: true, duplicate: true });
    assert(again.roundTrips <= 2, `a duplicate took ${again.roundTrips} round trips`);
  });
});

Deno.test("round trips: a cached quote takes at most 1 (the rate-limit hit); status takes 1", async () => {
  await withWorld(async ({ server, count }) => {
    const token = await userToken();
    const get = () =>
      server.call("market-data?symbols=AAPL", {
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      });
    assertEquals((await get()).status, 200); // live: fills both cache layers
    const cached = await count(get);
    assertEquals(cached.res.status, 200);
    assertEquals((await cached.res.json()).quotes.AAPL.source, "cache");
    assert(cached.roundTrips <= 1, `a cached quote took ${cached.roundTrips} round trips`);

    const status = await count(() => server.call("status"));
    assertEquals(await status.res.json(), { status: "ok" });
    assertEquals(status.roundTrips, 1, "status is one ping");
  });
});

Deno.test("round trips: a quote cached only in Postgres takes 1 (the cache read carries the rate-limit hit)", async () => {
  await withWorld(async ({ server, another, count }) => {
    const token = await userToken();
    const get = (s: TestServer) =>
      s.call("market-data?symbols=AAPL", {
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      });
    assertEquals((await get(server)).status, 200); // live: fills the Postgres cache
    const fresh = await another(); // its in-process layer is empty
    assertEquals((await get(fresh)).status, 200); // warm-up of the new instance's first purges
    const other = await another();
    const cached = await count(() => get(other));
    assertEquals(cached.res.status, 200);
    assertEquals((await cached.res.json()).quotes.AAPL.source, "cache");
    assertEquals(cached.roundTrips, 1, "one statement reads the cache and counts the hit");
  });
});

Deno.test("round trips: the Stripe catch-up takes at most one statement per applied event (plus the cursor and a read per page); a run with nothing new takes 2 and writes nothing", async () => {
  const db = await freshDatabase({ migrated: true });
  const target = new URL(db.url);
  const proxy = await startFaultProxy({ hostname: target.hostname, port: Number(target.port) });
  const sim = await startStripeSimulator({ secretKey: STRIPE_KEY, webhookSecret: SECRET });
  try {
    const env = testEnv(proxy.url(db.url), { ...webhookEnv(), STRIPE_API_URL: sim.url });
    const server = await startTestServer(env, { only: ["payment-webhook"] });
    try {
      const token = await serviceToken();
      const run = () =>
        server.call("payment-webhook/catch-up", {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
        });
      await (await run()).body?.cancel(); // warm-up: the first run writes its cursor
      for (let i = 0; i < 5; i++) {
        await sim.emit(checkoutCompleted() as SimulatedEvent, { deliver: false });
      }
      const applied = await countTrips(proxy, run);
      const body = await applied.res.json();
      assertEquals(body.applied, 5);
      assert(
        applied.roundTrips <= body.applied + 3,
        `5 applied events took ${applied.roundTrips} round trips (cursor read, page read, ` +
          "one per event, cursor write: 8)",
      );

      proxy.record();
      const quiet = await countTrips(proxy, run);
      const quietBody = await quiet.res.json();
      assertEquals(quietBody.applied, 0);
      assertEquals(quietBody.alreadyApplied, 5);
      assertEquals(quiet.roundTrips, 2, "the cursor and the page's recorded ids");
      const sent = new TextDecoder().decode(
        new Uint8Array(proxy.sent().flatMap((chunk) => [...chunk])),
      );
      assertMatch(sent, /internal\.stripe_events/, "the proxy saw the statements");
      assert(
        !/\b(insert|update|delete)\b/i.test(sent),
        "a run with nothing new sends no write",
      );
    } finally {
      await server.close();
    }
  } finally {
    await sim.close();
    await proxy.close();
    await db.close();
  }
});

async function countTrips(proxy: FaultProxy, request: () => Promise<Response>) {
  proxy.resetRoundTrips();
  const res = await request();
  const body = await res.arrayBuffer();
  return { roundTrips: proxy.roundTrips, res: new Response(body, res) };
}

Deno.test("round trips: one order GET takes 1; a cancel at most 2 (plus its broker calls); a sync run 2 however many orders change", async () => {
  await withWorld(async ({ server, count, broker }) => {
    const token = await userToken();
    const placed: { id: string; brokerOrderId: string }[] = [];
    for (let i = 0; i < 8; i++) placed.push(await (await order(server, token)).json());
    const headers = { authorization: `Bearer ${token}`, origin: FRONTEND };
    const one = await count(() => server.call(`broker-order/${placed[0].id}`, { headers }));
    assertEquals(one.res.status, 200);
    assertEquals(one.roundTrips, 1, "one order is one statement");

    const cancel = await count(() =>
      server.call(`broker-order/${placed[0].id}`, { method: "DELETE", headers })
    );
    assertEquals(cancel.res.status, 200);
    assert(cancel.roundTrips <= 2, `a cancel took ${cancel.roundTrips} round trips`);

    const service = { authorization: `Bearer ${await serviceToken()}` };
    const sync = () => server.call("broker-order/sync", { method: "POST", headers: service });
    assertEquals((await sync()).status, 200); // the pending cancel completes
    const quiet = await count(sync);
    assertEquals((await quiet.res.json()).changed, 0);
    for (const o of placed.slice(1, 6)) broker.fillNow(o.brokerOrderId);
    const busy = await count(sync);
    assertEquals((await busy.res.json()).changed, 5);
    assertEquals([quiet.roundTrips, busy.roundTrips], [2, 2], "a sync run is two statements");
  });
});
