/**
 * Benchmark: Stripe events per second through the real server (`deno run local/serve.ts` as its
 * own process) on the Postgres server. A fixed number of signed `checkout.session.completed`
 * events, 20% of them redeliveries of events sent earlier in the run (as Stripe's at-least-once
 * delivery produces), at a fixed concurrency (closed loop), after a short warm-up. Every body is
 * signed before the timed run. Checks afterwards that each unique event made exactly one
 * purchase. Prints one JSON object.
 *
 * Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno run -A local/bench/payment_webhook.ts`
 * Options (env): `EVENTS` (4000), `DUPLICATE_PERCENT` (20), `CONCURRENCY` (32), `WARMUP` (200).
 * Not part of `npm test`.
 */
import postgres from "postgres";
import { delivery } from "../../tests/functions/payment-webhook/stripe_events.ts";
import {
  checkoutCompleted,
  webhookEnv,
} from "../../tests/functions/payment-webhook/stripe_events.ts";
import { freshDatabase, SERVER_URL } from "../../tests/support/db.ts";
import { testEnv } from "../../tests/support/env.ts";
import { spawnServer } from "../../tests/support/server.ts";

const EVENTS = Number(Deno.env.get("EVENTS") ?? 4000);
const DUPLICATE_PERCENT = Number(Deno.env.get("DUPLICATE_PERCENT") ?? 20);
const CONCURRENCY = Number(Deno.env.get("CONCURRENCY") ?? 32);
const WARMUP = Number(Deno.env.get("WARMUP") ?? 200);

if (!SERVER_URL) {
  console.error("Set TEST_DATABASE_URL to the Postgres server (the benchmark needs a real one).");
  Deno.exit(2);
}

/** The deliveries in send order: unique events, with every 1-in-(100/p) a repeat of an earlier one. */
async function plan(count: number): Promise<{ inits: RequestInit[]; unique: number }> {
  const sent: RequestInit[] = [];
  const inits: RequestInit[] = [];
  for (let i = 0; i < count; i++) {
    const repeat = sent.length > 0 && (i * DUPLICATE_PERCENT) % 100 < DUPLICATE_PERCENT;
    if (repeat) {
      // A recent one, so some repeats race their original (concurrent redelivery).
      const back = Math.min(sent.length, 1 + Math.floor(Math.random() * CONCURRENCY * 2));
      inits.push(sent[sent.length - back]);
    } else {
      const init = await delivery(checkoutCompleted());
      sent.push(init);
      inits.push(init);
    }
  }
  return { inits, unique: sent.length };
}

const db = await freshDatabase();
const server = await spawnServer(testEnv(db.url, { ...webhookEnv(), LOG_LEVEL: "warn" }));
try {
  const warmup = await plan(WARMUP);
  const measured = await plan(EVENTS);
  const statuses: Record<string, number> = {};
  let duplicates = 0;
  const latencies: number[] = [];

  const run = async (inits: RequestInit[], record: boolean) => {
    let next = 0;
    const worker = async () => {
      while (next < inits.length) {
        const init = inits[next++];
        const started = performance.now();
        const res = await server.call("payment-webhook", init);
        const body = await res.json();
        if (record) {
          latencies.push(performance.now() - started);
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          if (body.duplicate) duplicates++;
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  };

  await run(warmup.inits, false);
  const started = performance.now();
  await run(measured.inits, true);
  const seconds = (performance.now() - started) / 1000;

  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  const [{ purchases }] = await sql`select count(*)::int as purchases from public.purchases`;
  await sql.end();

  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] * 100) /
    100;
  console.log(JSON.stringify(
    {
      scenario:
        `payment-webhook POST, checkout.session.completed, ${DUPLICATE_PERCENT}% redeliveries, real server process + Postgres server`,
      events: EVENTS,
      uniqueEvents: measured.unique,
      duplicatesAnswered: duplicates,
      concurrency: CONCURRENCY,
      seconds: Math.round(seconds * 1000) / 1000,
      eventsPerSecond: Math.round(EVENTS / seconds),
      latencyMs: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: pct(1) },
      statuses,
      // Each unique event (warm-up included) made exactly one purchase.
      exactlyOnce: purchases === warmup.unique + measured.unique,
    },
    null,
    2,
  ));
} finally {
  await server.stop();
  await db.close();
}
