/**
 * The platform's story (issue 13): on Supabase the database is never on loopback, so what a
 * request costs is mostly its database round trips. Two measurements, in one run:
 *
 * - **Far database**: the server (`local/serve.ts`, its own process) reaches Postgres through the
 *   TCP fault proxy with 5 ms of latency each way (a 10 ms round trip). Each route is called
 *   one request at a time; the proxy counts round trips per request, and each request's latency
 *   gives p50 / p99.
 * - **Ratios**: the same server on loopback, driven closed-loop by CONCURRENCY clients, against
 *   pgbench running the exact SQL the route sent (captured from the wire by the proxy during one
 *   request, its per-request values turned into pgbench variables) at the same concurrency. The
 *   ratio is the function's requests/s over pgbench's transactions/s: how close the function
 *   gets to the database's own ceiling for that work (goal ≥ 0.5).
 *
 * Writes tests/bench/results/platform.json, pgbench_order.sql and pgbench_webhook.sql; prints a
 * Markdown table. Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres deno run -A
 * tests/bench/platform.ts [--quick]`; `npm run bench` runs it after the scenarios. Not part of
 * `npm test`.
 */
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { startBrokerSimulator } from "../../local/sandbox/broker.ts";
import { startMarketDataSimulator } from "../../local/sandbox/market_data.ts";
import {
  checkoutCompleted,
  delivery,
  webhookEnv,
} from "../functions/payment_webhook/stripe_events.ts";
import { freshDatabase, SERVER_URL } from "../support/db.ts";
import { FRONTEND, testEnv, userToken } from "../support/env.ts";
import { type FaultProxy, startFaultProxy } from "../support/fault_proxy.ts";
import { type SpawnedServer, spawnServer } from "../support/server.ts";

const RESULTS = new URL("results/", import.meta.url);
/** Latency injected at the proxy, each way. */
const ONE_WAY_MS = 5;

export interface PlatformOptions {
  quick: boolean;
  log?: (line: string) => void;
}

export interface FarRoute {
  route: string;
  roundTrips: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
}

export interface Ratio {
  route: string;
  functionRps: number;
  pgbenchTps: number;
  ratio: number;
  concurrency: number;
  seconds: number;
  statuses: Record<string, number>;
  script: string;
}

export interface PlatformReport {
  oneWayLatencyMs: number;
  farDatabase: FarRoute[];
  ratios: Ratio[];
}

const ORDER_BODY = JSON.stringify({
  symbol: "AAPL",
  side: "buy",
  type: "limit",
  qty: "10",
  limit_price: "187.25",
  time_in_force: "gtc",
});

type Call = SpawnedServer["call"];

/** One request of each route, as a user (or Stripe) sends it; `i` makes keys unique. */
function routes(call: Call, token: string) {
  const user = { authorization: `Bearer ${token}`, origin: FRONTEND };
  return {
    "POST broker-order (new order)": () =>
      call("broker-order", {
        method: "POST",
        headers: {
          ...user,
          "content-type": "application/json",
          "idempotency-key": crypto.randomUUID(),
        },
        body: ORDER_BODY,
      }),
    "POST payment-webhook (new event)": async () =>
      call("payment-webhook", await delivery(checkoutCompleted())),
    "GET broker-order (list)": () => call("broker-order?limit=20", { headers: user }),
    "GET market-data (cached quote)": () =>
      call("market-data?symbols=AAPL,MSFT", { headers: user }),
    "GET status": () => call("status"),
  } as Record<string, () => Promise<Response>>;
}

function percentile(sorted: number[], p: number): number {
  const v = sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  return Math.round(v * 100) / 100;
}

/** Each route, one request at a time, through the proxy with ONE_WAY_MS each way. */
async function farDatabase(
  call: Call,
  proxy: FaultProxy,
  token: string,
  n: number,
): Promise<FarRoute[]> {
  proxy.latency(ONE_WAY_MS);
  const out: FarRoute[] = [];
  for (const [route, send] of Object.entries(routes(call, token))) {
    for (let i = 0; i < 10; i++) await (await send()).body?.cancel(); // warm-up
    const latencies: number[] = [];
    let roundTrips = 0;
    for (let i = 0; i < n; i++) {
      proxy.resetRoundTrips();
      const started = performance.now();
      const res = await send();
      await res.body?.cancel();
      latencies.push(performance.now() - started);
      roundTrips += proxy.roundTrips;
      if (res.status >= 300) throw new Error(`${route} answered ${res.status}`);
    }
    latencies.sort((a, b) => a - b);
    out.push({
      route,
      roundTrips: Math.round((roundTrips / n) * 100) / 100,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      requests: n,
    });
  }
  proxy.latency(0);
  return out;
}

// ---- the SQL a request sends, from the wire ----------------------------------------------------

/** SQL texts in Postgres frontend messages: Query ('Q') and Parse ('P'). */
export function sqlTexts(chunks: Uint8Array[]): string[] {
  const texts: string[] = [];
  const decoder = new TextDecoder();
  for (const b of chunks) {
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let o = 0;
    while (o + 5 <= b.length) {
      const type = String.fromCharCode(b[o]);
      const len = view.getUint32(o + 1);
      const body = b.subarray(o + 5, o + 1 + len);
      if (type === "Q") texts.push(decoder.decode(body.subarray(0, body.indexOf(0))));
      if (type === "P") {
        const nameEnd = body.indexOf(0);
        const rest = body.subarray(nameEnd + 1);
        texts.push(decoder.decode(rest.subarray(0, rest.indexOf(0))));
      }
      if (len < 4) break;
      o += 1 + len;
    }
  }
  return texts;
}

/**
 * A pgbench script of `texts` with the per-request values as variables: the user's id stays
 * one of 1,000 users, every other uuid, client_order_id and Stripe id is new per transaction.
 */
export function pgbenchScript(texts: string[], userId: string): string {
  const vars = new Map<string, string>();
  const lines: string[] = [];
  const variable = (value: string) => {
    let name = vars.get(value);
    if (!name) vars.set(value, name = `r${vars.size + 1}`);
    return name;
  };
  lines.push(`\\set user random(100000000000, 100000000999)`);
  const body = texts.map((t) => {
    let sql = t
      .replaceAll(userId, "00000000-0000-4000-8000-:user")
      .replace(
        /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g,
        (u) =>
          u.startsWith("00000000-0000-4000-8000-") ? u : `00000000-0000-4000-9000-:${variable(u)}`,
      )
      .replace(/bo-[A-Za-z0-9_-]{43}/g, (id) => `bo-:${variable(id)}`)
      .replace(
        /\b((?:evt|cs|pi|cus|ch|sub|in)(?:_test)?)_[A-Za-z0-9]{24}\b/g,
        (id, prefix) => `${prefix}_:${variable(id)}`,
      );
    // A simple query's "begin; select …" is one request: pgbench's \; keeps it one.
    sql = sql.replace(/^begin; /, "begin \\; ");
    return `${sql.trim()};`;
  });
  for (const name of vars.values()) lines.push(`\\set ${name} random(100000000000, 999999999999)`);
  return [...lines, ...body].join("\n") + "\n";
}

/** Captures the SQL of one request of `send` (the proxy records the client's bytes). */
async function capture(proxy: FaultProxy, send: () => Promise<Response>): Promise<string[]> {
  proxy.record();
  const res = await send();
  await res.body?.cancel();
  return sqlTexts(proxy.sent());
}

// ---- throughput ---------------------------------------------------------------------------------

async function closedLoop(
  send: (worker: number) => Promise<Response>,
  concurrency: number,
  seconds: number,
): Promise<{ rps: number; statuses: Record<string, number> }> {
  const statuses: Record<string, number> = {};
  let done = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (performance.now() < until) {
      const res = await send(w);
      await res.body?.cancel();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      done++;
    }
  }));
  return { rps: Math.round(done / ((performance.now() - started) / 1000)), statuses };
}

async function pgbench(
  url: string,
  script: URL,
  concurrency: number,
  seconds: number,
): Promise<number> {
  const { stdout, stderr, success } = await new Deno.Command("pgbench", {
    args: [
      "-n",
      "-c",
      String(concurrency),
      "-j",
      "2",
      "-T",
      String(seconds),
      "-f",
      script.pathname,
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout);
  const tps = /tps = ([\d.]+)/.exec(text)?.[1];
  if (!success || !tps) {
    throw new Error(`pgbench failed: ${new TextDecoder().decode(stderr).slice(0, 500)}`);
  }
  return Math.round(Number(tps));
}

// ---- the run --------------------------------------------------------------------------------------

export async function runPlatform(opts: PlatformOptions): Promise<PlatformReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  if (!SERVER_URL) throw new Error("Set TEST_DATABASE_URL to the Postgres server.");
  const n = opts.quick ? 100 : 400;
  const seconds = opts.quick ? 5 : 15;
  const concurrency = 16;
  const db = await freshDatabase();
  const target = new URL(db.url);
  const proxy = await startFaultProxy({ hostname: target.hostname, port: Number(target.port) });
  const broker = await startBrokerSimulator({ keyId: "bench-key", secretKey: "bench-secret" });
  const quotes = await startMarketDataSimulator({
    keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
    secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
  });
  const env = (url: string) =>
    testEnv(url, {
      ...webhookEnv(),
      BROKER_API_URL: broker.url,
      BROKER_API_KEY_ID: "bench-key",
      BROKER_API_SECRET_KEY: "bench-secret",
      MARKET_DATA_API_URL: quotes.url,
      MARKET_DATA_API_KEY_ID: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
      MARKET_DATA_API_SECRET_KEY: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
      ORDER_RATE_LIMIT: "1000000",
      MARKET_DATA_RATE_LIMIT: "1000000",
      DB_QUERY_TIMEOUT_MS: "5000",
      LOG_LEVEL: "warn",
    });
  const servers: SpawnedServer[] = [];
  try {
    // Far database.
    const far = await spawnServer(env(proxy.url(db.url)));
    servers.push(far);
    const userId = crypto.randomUUID();
    const token = await userToken(userId);
    log(`\n## far database: ${ONE_WAY_MS} ms each way, ${n} requests per route, one at a time`);
    const farDatabaseRoutes = await farDatabase(far.call, proxy, token, n);
    for (const r of farDatabaseRoutes) {
      log(`  ${r.route}: ${r.roundTrips} round trips, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms`);
    }

    // The exact SQL of the two write paths, from the wire.
    const rs = routes(far.call, token);
    const orderSql = await capture(proxy, rs["POST broker-order (new order)"]);
    const webhookSql = await capture(proxy, rs["POST payment-webhook (new event)"]);
    await Deno.mkdir(RESULTS, { recursive: true });
    const orderScript = new URL("pgbench_order.sql", RESULTS);
    const webhookScript = new URL("pgbench_webhook.sql", RESULTS);
    await Deno.writeTextFile(orderScript, pgbenchScript(orderSql, userId));
    await Deno.writeTextFile(webhookScript, pgbenchScript(webhookSql, userId));
    await far.stop();
    servers.pop();

    // Ratios, on loopback.
    const near = await spawnServer(env(db.url));
    servers.push(near);
    const tokens = await Promise.all(Array.from({ length: concurrency }, () => userToken()));
    const ratios: Ratio[] = [];
    log(`\n## ratios: ${concurrency} clients, ${seconds} s each, function vs pgbench (same SQL)`);
    {
      const send = (w: number) => routes(near.call, tokens[w])["POST broker-order (new order)"]();
      await closedLoop(send, concurrency, 1);
      const fn = await closedLoop(send, concurrency, seconds);
      const tps = await pgbench(db.url, orderScript, concurrency, seconds);
      ratios.push({
        route: "POST broker-order",
        functionRps: fn.rps,
        pgbenchTps: tps,
        ratio: Math.round((fn.rps / tps) * 100) / 100,
        concurrency,
        seconds,
        statuses: fn.statuses,
        script: "tests/bench/results/pgbench_order.sql",
      });
    }
    {
      // Signed ahead of time: signing is Stripe's work, not the function's.
      const deliveries = await Promise.all(
        Array.from({ length: opts.quick ? 4000 : 12000 }, () => delivery(checkoutCompleted())),
      );
      let next = 0;
      const send = () => {
        const init = deliveries[next++ % deliveries.length];
        return near.call("payment-webhook", init);
      };
      await closedLoop(send, concurrency, 1);
      const fn = await closedLoop(send, concurrency, seconds);
      const tps = await pgbench(db.url, webhookScript, concurrency, seconds);
      ratios.push({
        route: "POST payment-webhook",
        functionRps: fn.rps,
        pgbenchTps: tps,
        ratio: Math.round((fn.rps / tps) * 100) / 100,
        concurrency,
        seconds,
        statuses: fn.statuses,
        script: "tests/bench/results/pgbench_webhook.sql",
      });
    }
    for (const r of ratios) {
      log(
        `  ${r.route}: ${r.functionRps}/s vs pgbench ${r.pgbenchTps}/s = ${r.ratio} ${
          JSON.stringify(r.statuses)
        }`,
      );
    }
    const report = { oneWayLatencyMs: ONE_WAY_MS, farDatabase: farDatabaseRoutes, ratios };
    await Deno.writeTextFile(
      new URL("platform.json", RESULTS),
      JSON.stringify({ ...report, at: new Date().toISOString(), quick: opts.quick }, null, 2) +
        "\n",
    );
    log("\n" + platformMarkdown(report));
    return report;
  } finally {
    for (const s of servers) await s.stop();
    await proxy.close();
    await quotes.close();
    await broker.close();
    await db.close();
  }
}

/** The README's table. */
export function platformMarkdown(r: PlatformReport): string {
  const lines = [
    `| route | round trips | p50 / p99 ms, database ${r.oneWayLatencyMs} ms away each way |`,
    "| --- | --: | --: |",
    ...r.farDatabase.map((f) => `| ${f.route} | ${f.roundTrips} | ${f.p50Ms} / ${f.p99Ms} |`),
    "",
    "| write path | function req/s | pgbench tps, same SQL | ratio (goal ≥ 0.5) |",
    "| --- | --: | --: | --: |",
    ...r.ratios.map((x) => `| ${x.route} | ${x.functionRps} | ${x.pgbenchTps} | ${x.ratio} |`),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  await runPlatform({ quick: Deno.args.includes("--quick") });
  Deno.exit(0);
}
