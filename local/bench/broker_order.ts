/**
 * Benchmark: orders per second through the real server (`deno run local/serve.ts` as its own
 * process) on the Postgres server, with the simulated Alpaca on loopback. Every order is a new
 * Idempotency-Key (so each one claims a key, checks the rate limit, calls the broker and commits
 * the order with the key's completion); a fixed count at a fixed concurrency (closed loop), after
 * a short warm-up. Prints one JSON object.
 *
 * Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno run -A local/bench/broker_order.ts`
 * Options (env): `ORDERS` (2000), `CONCURRENCY` (32), `WARMUP` (100).
 * Not part of `npm test`.
 */
import { startBrokerSimulator } from "../sandbox/broker.ts";
import { freshDatabase, SERVER_URL } from "../../tests/support/db.ts";
import { testEnv, userToken } from "../../tests/support/env.ts";
import { spawnServer } from "../../tests/support/server.ts";

const ORDERS = Number(Deno.env.get("ORDERS") ?? 2000);
const CONCURRENCY = Number(Deno.env.get("CONCURRENCY") ?? 32);
const WARMUP = Number(Deno.env.get("WARMUP") ?? 100);

if (!SERVER_URL) {
  console.error("Set TEST_DATABASE_URL to the Postgres server (the benchmark needs a real one).");
  Deno.exit(2);
}

const BODY = JSON.stringify({
  symbol: "AAPL",
  side: "buy",
  type: "limit",
  qty: "10",
  limit_price: "187.25",
  time_in_force: "gtc",
});

const db = await freshDatabase();
const broker = await startBrokerSimulator({ keyId: "bench-key", secretKey: "bench-secret" });
const server = await spawnServer(testEnv(db.url, {
  BROKER_API_URL: broker.url,
  BROKER_API_KEY_ID: "bench-key",
  BROKER_API_SECRET_KEY: "bench-secret",
  ORDER_RATE_LIMIT: "1000000",
  LOG_LEVEL: "warn",
}));
try {
  // One user per worker, as many traders would be.
  const tokens = await Promise.all(Array.from({ length: CONCURRENCY }, () => userToken()));
  const statuses: Record<string, number> = {};
  const latencies: number[] = [];

  const run = async (count: number, record: boolean) => {
    let next = 0;
    const worker = async (w: number) => {
      while (next < count) {
        next++;
        const started = performance.now();
        const res = await server.call("broker-order", {
          method: "POST",
          headers: {
            authorization: `Bearer ${tokens[w]}`,
            "content-type": "application/json",
            "idempotency-key": crypto.randomUUID(),
          },
          body: BODY,
        });
        await res.body?.cancel();
        if (record) {
          latencies.push(performance.now() - started);
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, (_, w) => worker(w)));
  };

  await run(WARMUP, false);
  const started = performance.now();
  await run(ORDERS, true);
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] * 100) /
    100;
  console.log(JSON.stringify(
    {
      benchmark:
        "broker-order POST, unique keys, real server process + Postgres server + simulated broker",
      orders: ORDERS,
      concurrency: CONCURRENCY,
      seconds: Math.round(seconds * 1000) / 1000,
      ordersPerSecond: Math.round(ORDERS / seconds),
      latencyMs: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: pct(1) },
      statuses,
      brokerOrders: broker.placed,
    },
    null,
    2,
  ));
} finally {
  await server.stop();
  await broker.close();
  await db.close();
}
