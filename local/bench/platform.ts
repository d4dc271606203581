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
 *   gets to the database's own ceiling for that work (goal ≥ 0.5). The two alternate in
 *   RATIO_ROUNDS rounds (function, pgbench, function, …), so a drift in what the shared machine
 *   gives weighs on both alike; run back to back, whichever ran second was favoured or not by
 *   chance, by as much as 0.1 of the ratio.
 * - **Ratios, database on its own cores**: the same again in the platform's shape, where Postgres
 *   has a machine of its own: the database's backends pinned (taskset) to the upper half of the
 *   cores, everything else to the lower half, for both sides alike (see `Placement`). Needs
 *   permission to set the affinity of Postgres's processes (root, or the postgres user);
 *   without it this part is reported as not measured.
 * - **Preflight**: the same server's CORS preflight (broker-order, allowed origin) against a bare
 *   `Deno.serve` (local/bench/baseline_server.ts), both driven by wrk with
 *   PREFLIGHT_CONNECTIONS connections, alternating in RATIO_ROUNDS rounds (goal ≥ 0.5). Needs
 *   wrk (Debian's `wrk` package); without it this part is reported as not measured.
 *
 * The comparison is kept like for like. Each client is one keep-alive HTTP/1.1 connection
 * (load.ts's `HttpConnection`, requests written as bytes, as wrk does) and one user, as each
 * pgbench client is one connection and, in the script, one user (`:client_id`). The broker
 * simulator (the order's upstream) runs in this process with the clients. Everything shares the
 * machine's cores: each ratio comes with where the CPU went during both runs (cpu.ts: the
 * server, this process, the database's Postgres backends, pgbench, anything else, idle), so a
 * ratio taken on a busy machine says so. The server runs as deployed: access log on.
 *
 * Writes local/bench/results/platform.json, pgbench_order.sql and pgbench_webhook.sql; prints a
 * Markdown table. Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres deno run -A
 * local/bench/platform.ts [--quick] [--seconds s] [--far n] [--cpu-prof dir]` (`--seconds`: each
 * ratio run's length, 15 s or 5 s quick; `--far`: requests per route through the far database,
 * 400 or 100 quick; `--cpu-prof`: a V8 CPU profile of each ratio run's server,
 * `<dir>/platform-<route>-<placement>.cpuprofile`, and `platform-preflight.cpuprofile`); `npm run bench` runs it after the scenarios. Not part of
 * `npm test`.
 */
import { SANDBOX_SECRETS } from "../sandbox/index.ts";
import { startBrokerSimulator } from "../sandbox/broker.ts";
import { startMarketDataSimulator } from "../sandbox/market_data.ts";
import {
  checkoutCompleted,
  delivery,
  webhookEnv,
} from "../../tests/functions/payment-webhook/stripe_events.ts";
import postgres from "postgres";
import { freshDatabase, SERVER_URL } from "../../tests/support/db.ts";
import { FRONTEND, testEnv, userToken } from "../../tests/support/env.ts";
import { type FaultProxy, startFaultProxy } from "../../tests/support/fault_proxy.ts";
import { type CpuSplit, cpuSplit, processCpuMs, sampleCpu } from "./cpu.ts";
import { encodeRequest, HttpConnection, type Target } from "./load.ts";
import { BASELINE_READY, cpuProfFlags, SERVER_READY, spawnProcess } from "./scenarios.ts";

const RESULTS = new URL("results/", import.meta.url);
/** Function and pgbench runs per ratio, alternated; a ratio run's seconds are split among them. */
const RATIO_ROUNDS = 3;
/** Seconds of each round of a ratio run of `seconds`. */
const ratioRoundSeconds = (seconds: number) => Math.max(2, Math.round(seconds / RATIO_ROUNDS));
/** Webhooks signed per second of a run: above the fastest seen here (about 2,500/s). */
const WEBHOOKS_PER_SECOND_MAX = 4000;
/** The mean of the rounds' figures. */
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** Latency injected at the proxy, each way. */
const ONE_WAY_MS = 5;
/** wrk's connections (on two threads) for the preflight ratio, as the issue's own lead used. */
const PREFLIGHT_CONNECTIONS = 32;

export interface PlatformOptions {
  quick: boolean;
  /** Length of each ratio run; default 15 s, 5 s quick. */
  seconds?: number;
  /** Requests per route through the far database; default 400, 100 quick. */
  farRequests?: number;
  log?: (line: string) => void;
  /** Write a V8 CPU profile of each ratio run's server here (`platform-<name>.cpuprofile`). */
  cpuProfDir?: string;
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
  /** Where the processes ran: `shared` (every core for everything) or `dedicated` (see Placement). */
  placement: "shared" | "dedicated";
  functionRps: number;
  pgbenchTps: number;
  ratio: number;
  concurrency: number;
  seconds: number;
  statuses: Record<string, number>;
  script: string;
  /**
   * Where the CPU went, in percent of one core (`cores` × 100 in all): while the function ran
   * (`server`, `bench`: this process, the clients and the broker simulator, `postgres`: the
   * database's backends) and while pgbench ran (`pgbench`, `postgres`); `other` is everything
   * else on the machine, `idle` what was left.
   */
  cpu: { cores: number; function: CpuSplit["groups"]; pgbench: CpuSplit["groups"] };
}

/**
 * A CORS preflight against a bare `Deno.serve` (local/bench/baseline_server.ts), both driven by
 * wrk in alternating rounds; with each, the server's CPU per request (µs, its process's user +
 * system time over the requests wrk completed). `skipped` says why it was not measured.
 */
export interface PreflightRatio {
  preflightRps?: number;
  bareRps?: number;
  ratio?: number;
  cpuUsPerRequest?: { preflight: number; bare: number };
  connections: number;
  seconds: number;
  skipped?: string;
}

export interface PlatformReport {
  oneWayLatencyMs: number;
  farDatabase: FarRoute[];
  ratios: Ratio[];
  /** The ratios again with the database's backends on cores of their own; `skipped` says why not. */
  dedicated: { appCores: string; databaseCores: string; skipped?: string };
  preflight: PreflightRatio;
}

/**
 * Where the ratio runs put their processes. `shared`: anywhere, as the machine schedules them.
 * `dedicated`: the platform's shape, where Postgres is on a machine of its own: the database's
 * backends (the function's pool and pgbench's connections alike) on the upper half of the cores,
 * and everything else (the server, this process with its clients and the broker simulator,
 * pgbench's client) on the lower half. Both sides give the database exactly the same cores, so
 * the ratio still reads as the function's share of the database's own ceiling; what it leaves
 * out is the server and the backends preempting each other on one core (the shared run's
 * bottleneck, see docs/performance.md).
 */
interface Placement {
  name: Ratio["placement"];
  /** taskset CPU lists; absent when shared. */
  app?: string;
  db?: string;
}

const SHARED: Placement = { name: "shared" };

/** The dedicated placement for this machine (at least two cores), or why there is none. */
function dedicatedPlacement(): Placement | string {
  const cores = navigator.hardwareConcurrency;
  if (cores < 2) return `one core only`;
  const list = (lo: number, hi: number) => lo === hi ? `${lo}` : `${lo}-${hi}`;
  const half = Math.floor(cores / 2);
  return { name: "dedicated", app: list(0, half - 1), db: list(half, cores - 1) };
}

/** Sets the CPU affinity of every thread of `pids` (taskset); throws with taskset's reason. */
async function pin(pids: Iterable<number>, cpus: string): Promise<void> {
  for (const pid of pids) {
    const out = await new Deno.Command("taskset", {
      args: ["-a", "-p", "-c", cpus, String(pid)],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new PlacementError(
        `taskset could not pin process ${pid}: ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
  }
}

/** Pinning was refused (no permission over Postgres's processes, no taskset). */
class PlacementError extends Error {}

const ORDER_BODY = JSON.stringify({
  symbol: "AAPL",
  side: "buy",
  type: "limit",
  qty: "10",
  limit_price: "187.25",
  time_in_force: "gtc",
});

type Call = (path: string, init?: RequestInit) => Promise<Response>;

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
 * A pgbench script of `texts` with the per-request values as variables: the user's id is the
 * client's own (`:client_id`, as each client of the function's run is one user), every other
 * uuid, client_order_id and Stripe id is new per transaction: two random numbers, 20 digits in
 * all (with one, 12 digits, a run's keys once collided, and a reused key aborts pgbench).
 */
export function pgbenchScript(texts: string[], userId: string): string {
  const vars = new Map<string, string>();
  const lines: string[] = [];
  const variable = (value: string) => {
    let name = vars.get(value);
    if (!name) vars.set(value, name = `r${vars.size + 1}`);
    return name;
  };
  lines.push(`\\set user 100000000000 + :client_id`);
  const body = texts.map((t) => {
    let sql = t
      .replaceAll(userId, "00000000-0000-4000-8000-:user")
      .replace(
        /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g,
        (u) => {
          if (u.startsWith("00000000-0000-4000-8000-")) return u;
          const r = variable(u);
          return `:${r}h-0000-4000-9000-:${r}`;
        },
      )
      .replace(/bo-[A-Za-z0-9_-]{43}/g, (id) => `bo-:${variable(id)}h:${variable(id)}`)
      .replace(
        /\b((?:evt|cs|pi|cus|ch|sub|in)(?:_test)?)_[A-Za-z0-9]{24}\b/g,
        (id, prefix) => `${prefix}_:${variable(id)}h:${variable(id)}`,
      );
    // A simple query's "begin; select …" is one request: pgbench's \; keeps it one.
    sql = sql.replace(/^begin; /, "begin \\; ");
    return `${sql.trim()};`;
  });
  for (const name of vars.values()) {
    lines.push(`\\set ${name}h random(10000000, 99999999)`);
    lines.push(`\\set ${name} random(100000000000, 999999999999)`);
  }
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

/** A request for the closed loop: method, path and query, headers, body. */
interface Wire {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * `concurrency` clients, each one keep-alive connection sending `next(client)` and waiting for
 * the answer, for `seconds`. A failed exchange counts under its error and reconnects.
 */
async function closedLoop(
  target: Target,
  next: (client: number) => Wire,
  concurrency: number,
  seconds: number,
): Promise<{ rps: number; statuses: Record<string, number> }> {
  const statuses: Record<string, number> = {};
  let done = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, client) => {
    let conn: HttpConnection | undefined;
    try {
      while (performance.now() < until) {
        const request = encodeRequest(target, next(client));
        conn = conn && !conn.closed ? conn : await HttpConnection.open(target);
        let status: string;
        try {
          const code = await conn.exchange(request, 30_000);
          // A refusal is counted by its error code too (`503 DB_BUSY`).
          status = code >= 400 && conn.lastErrorCode
            ? `${code} ${conn.lastErrorCode}`
            : String(code);
        } catch (err) {
          status = err instanceof Error ? err.message : "error";
        }
        statuses[status] = (statuses[status] ?? 0) + 1;
        done++;
      }
    } finally {
      conn?.close();
    }
  }));
  return { rps: Math.round(done / ((performance.now() - started) / 1000)), statuses };
}

/**
 * The server processes (pid) of the database at `url`, as Postgres lists its backends, leaving
 * out `known` ones: once at least `atLeast` are connected, or after 5 s with those there are.
 */
async function backendsOf(
  url: string,
  atLeast = 1,
  known = new Set<number>(),
): Promise<Set<number>> {
  const admin = postgres(SERVER_URL!, { max: 1, onnotice: () => {} });
  try {
    const name = new URL(url).pathname.slice(1);
    const deadline = performance.now() + 5_000;
    for (;;) {
      const rows = await admin<{ pid: number }[]>`
        select pid from pg_stat_activity where datname = ${name}`;
      const pids = new Set(rows.map((r) => r.pid).filter((pid) => !known.has(pid)));
      if (pids.size >= atLeast || performance.now() > deadline) return pids;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await admin.end();
  }
}

/** The function's run: warm-up, then `seconds` measured, with the CPU split of the run. */
async function functionRun(
  server: Server,
  dbUrl: string,
  next: (client: number) => Wire,
  concurrency: number,
  seconds: number,
  placement: Placement,
) {
  const target: Target = { hostname: "127.0.0.1", port: server.port };
  await closedLoop(target, next, concurrency, 1);
  const backends = await backendsOf(dbUrl);
  if (placement.app && placement.db) {
    await pin([server.pid, Deno.pid], placement.app);
    await pin(backends, placement.db);
  }
  const before = sampleCpu();
  const run = await closedLoop(target, next, concurrency, seconds);
  const cpu = cpuSplit(before, sampleCpu(), {
    server: (pid) => pid === server.pid,
    bench: (pid) => pid === Deno.pid,
    postgres: (pid) => backends.has(pid),
  });
  return { ...run, cpu };
}

/** pgbench with `script` at `concurrency` clients for `seconds`: its tps and the CPU split. */
async function pgbench(
  url: string,
  script: URL,
  concurrency: number,
  seconds: number,
  placement: Placement,
): Promise<{ tps: number; cpu: CpuSplit }> {
  // The server's idle pool connections to the same database are not pgbench's.
  const before = await backendsOf(url, 0);
  const child = new Deno.Command(placement.app ? "taskset" : "pgbench", {
    args: [
      ...(placement.app ? ["-c", placement.app, "pgbench"] : []),
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
  }).spawn();
  const started = performance.now();
  const output = child.output();
  // CPU is sampled inside the run (a process that has exited is no longer counted): from when
  // every client is connected to 1.5 s before pgbench's own end (its -T counts from its start,
  // and reading /proc takes a moment on a busy machine).
  const backends = await backendsOf(url, concurrency, before);
  if (placement.db) await pin(backends, placement.db);
  const first = sampleCpu();
  await new Promise((r) =>
    setTimeout(r, Math.max(500, started + seconds * 1000 - 1500 - performance.now()))
  );
  const cpu = cpuSplit(first, sampleCpu(), {
    pgbench: (pid) => pid === child.pid,
    postgres: (pid) => backends.has(pid),
  });
  const { stdout, stderr, success } = await output;
  const text = new TextDecoder().decode(stdout);
  const tps = /tps = ([\d.]+)/.exec(text)?.[1];
  if (!success || !tps) {
    throw new Error(`pgbench failed: ${new TextDecoder().decode(stderr).slice(0, 500)}`);
  }
  return { tps: Math.round(Number(tps)), cpu };
}

/** The function against pgbench, in alternating rounds. */
async function ratio(
  route: string,
  server: Server,
  dbUrl: string,
  next: (client: number) => Wire,
  script: URL,
  concurrency: number,
  seconds: number,
  placement: Placement = SHARED,
): Promise<Ratio> {
  // Interleaved (function, pgbench, function, …), so that a drift in what the shared machine
  // gives (other jobs, the host) weighs on both sides alike; each side's figure is the mean of
  // its rounds, and so is its CPU split.
  const fns: Awaited<ReturnType<typeof functionRun>>[] = [];
  const pgs: Awaited<ReturnType<typeof pgbench>>[] = [];
  const each = ratioRoundSeconds(seconds);
  for (let round = 0; round < RATIO_ROUNDS; round++) {
    fns.push(await functionRun(server, dbUrl, next, concurrency, each, placement));
    pgs.push(await pgbench(dbUrl, script, concurrency, each, placement));
  }
  const meanGroups = (splits: CpuSplit[]) =>
    Object.fromEntries(
      Object.keys(splits[0].groups).map((k) => [
        k,
        Math.round(mean(splits.map((x) => x.groups[k] ?? 0))),
      ]),
    );
  const statuses: Record<string, number> = {};
  for (const f of fns) {
    for (const [k, v] of Object.entries(f.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  }
  const functionRps = Math.round(mean(fns.map((f) => f.rps)));
  const pgbenchTps = Math.round(mean(pgs.map((p) => p.tps)));
  return {
    route,
    placement: placement.name,
    functionRps,
    pgbenchTps,
    ratio: Math.round((functionRps / pgbenchTps) * 100) / 100,
    concurrency,
    seconds,
    statuses,
    script: `local/bench/results/${script.pathname.split("/").pop()}`,
    cpu: {
      cores: fns[0].cpu.cores,
      function: meanGroups(fns.map((f) => f.cpu)),
      pgbench: meanGroups(pgs.map((p) => p.cpu)),
    },
  };
}

// ---- preflight against a bare Deno.serve, driven by wrk ----------------------------------------

/**
 * One wrk run (closed loop: PREFLIGHT_CONNECTIONS keep-alive connections on two threads) against
 * `url`: requests per second, and the CPU per request of the process `pid`. wrk is C, like
 * pgbench: the Deno generator's own limit (about 32,000 requests/s here) sat below the bare
 * server's, so it could not give this ratio. Every answer must be 2xx.
 */
async function wrkRun(url: string, script: string | undefined, pid: number, seconds: number) {
  const cpu0 = processCpuMs(pid);
  const out = await new Deno.Command("wrk", {
    args: [
      "-t2",
      `-c${PREFLIGHT_CONNECTIONS}`,
      `-d${seconds}s`,
      ...(script ? ["-s", script] : []),
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const cpuMs = processCpuMs(pid) - cpu0;
  const text = new TextDecoder().decode(out.stdout);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1]);
  if (!out.success || !(rps > 0) || !(requests > 0)) {
    throw new Error(`wrk failed: ${new TextDecoder().decode(out.stderr).slice(0, 300)}${text}`);
  }
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1];
  if (bad) throw new Error(`${url} answered ${bad} requests with other than 2xx`);
  return { rps, cpuUsPerRequest: (cpuMs * 1000) / requests };
}

/** Whether wrk can be run. */
async function haveWrk(): Promise<boolean> {
  try {
    await new Deno.Command("wrk", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** The preflight ratio: `server`'s broker-order preflight against a bare Deno.serve. */
async function preflightRatio(server: Server, seconds: number): Promise<PreflightRatio> {
  const base = { connections: PREFLIGHT_CONNECTIONS, seconds };
  if (!(await haveWrk())) {
    return { ...base, skipped: "wrk is not installed (Debian: apt-get install wrk)" };
  }
  const bare = await spawnProcess({
    entry: "local/bench/baseline_server.ts",
    env: {},
    ready: BASELINE_READY,
  });
  const dir = await Deno.makeTempDir({ prefix: "preflight-" });
  try {
    const script = `${dir}/preflight.lua`;
    await Deno.writeTextFile(
      script,
      [
        `wrk.method = "OPTIONS"`,
        `wrk.headers["origin"] = "${FRONTEND}"`,
        `wrk.headers["access-control-request-method"] = "POST"`,
        `wrk.headers["access-control-request-headers"] = "authorization, content-type, idempotency-key"`,
      ].join("\n") + "\n",
    );
    const fnUrl = `http://127.0.0.1:${server.port}/functions/v1/broker-order`;
    const bareUrl = `${new URL(bare.url).origin}/`;
    const each = ratioRoundSeconds(seconds);
    await wrkRun(fnUrl, script, server.pid, 1); // warm-up
    await wrkRun(bareUrl, undefined, bare.pid, 1);
    const fns: Awaited<ReturnType<typeof wrkRun>>[] = [];
    const bares: Awaited<ReturnType<typeof wrkRun>>[] = [];
    for (let round = 0; round < RATIO_ROUNDS; round++) {
      fns.push(await wrkRun(fnUrl, script, server.pid, each));
      bares.push(await wrkRun(bareUrl, undefined, bare.pid, each));
    }
    const preflightRps = Math.round(mean(fns.map((f) => f.rps)));
    const bareRps = Math.round(mean(bares.map((b) => b.rps)));
    const us = (runs: typeof fns) => Math.round(mean(runs.map((r) => r.cpuUsPerRequest)) * 10) / 10;
    return {
      ...base,
      preflightRps,
      bareRps,
      ratio: Math.round((preflightRps / bareRps) * 100) / 100,
      cpuUsPerRequest: { preflight: us(fns), bare: us(bares) },
    };
  } finally {
    await bare.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A server process (`local/serve.ts`) and a `call` over fetch. */
interface Server {
  pid: number;
  port: number;
  call: Call;
  stop(): Promise<unknown>;
}

async function startServer(env: Record<string, string>, denoFlags?: string[]): Promise<Server> {
  const p = await spawnProcess({ entry: "local/serve.ts", env, ready: SERVER_READY, denoFlags });
  return {
    pid: p.pid,
    port: Number(new URL(p.url).port),
    call: (path, init) => fetch(`${p.url}/functions/v1/${path}`, init),
    stop: p.stop,
  };
}

/** A ratio's lines: the two rates, the CPU split of both sides, and CPU per request. */
function logRatio(r: Ratio, log: (line: string) => void) {
  log(
    `  ${r.route}: ${r.functionRps}/s vs pgbench ${r.pgbenchTps}/s = ${r.ratio} ${
      JSON.stringify(r.statuses)
    }`,
  );
  log(
    `    CPU, % of one core (${r.cpu.cores} cores): function ${
      JSON.stringify(r.cpu.function)
    }; pgbench ${JSON.stringify(r.cpu.pgbench)}`,
  );
  log(
    `    CPU ms per request: ${
      msPer(r.cpu.function, r.functionRps, ["server", "bench", "postgres"])
    }; per pgbench transaction: ${msPer(r.cpu.pgbench, r.pgbenchTps, ["pgbench", "postgres"])}`,
  );
}

/** CPU per request of each group, ms, from its share of the cores over the run. */
function msPer(groups: Record<string, number>, perSecond: number, names: string[]): string {
  return names.map((n) => `${n} ${(groups[n] / 100 / perSecond * 1000).toFixed(2)}`).join(", ");
}

// ---- the run --------------------------------------------------------------------------------------

export async function runPlatform(opts: PlatformOptions): Promise<PlatformReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  if (!SERVER_URL) throw new Error("Set TEST_DATABASE_URL to the Postgres server.");
  const n = opts.farRequests ?? (opts.quick ? 100 : 400);
  const seconds = opts.seconds ?? (opts.quick ? 5 : 15);
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
    });
  const servers: Server[] = [];
  try {
    // Far database.
    const far = await startServer(env(proxy.url(db.url)));
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

    // Ratios, on loopback. Each measurement gets a server process of its own, as each function
    // has an isolate of its own on the platform: a server that had just run another function's
    // load answered preflights with up to 40 % more CPU each (code shared by every function,
    // Hono's dispatch for one, no longer specialised to one function's requests).
    const fresh = async (name: string) => {
      const server = await startServer(
        env(db.url),
        cpuProfFlags(opts.cpuProfDir, `platform-${name}`),
      );
      servers.push(server);
      return server;
    };
    const done = async (server: Server) => {
      servers.splice(servers.indexOf(server), 1);
      await server.stop();
    };
    const tokens = await Promise.all(Array.from({ length: concurrency }, () => userToken()));
    const ratios: Ratio[] = [];
    const order = (client: number): Wire => ({
      method: "POST",
      path: "/functions/v1/broker-order",
      headers: {
        authorization: `Bearer ${tokens[client]}`,
        origin: FRONTEND,
        "content-type": "application/json",
        "idempotency-key": crypto.randomUUID(),
      },
      body: ORDER_BODY,
    });
    // Signed ahead of time (signing is Stripe's work, not the function's), more than the run can
    // use (its rounds and their one-second warm-ups, at WEBHOOKS_PER_SECOND_MAX): an event id
    // delivered twice would be a cheaper duplicate, so running out throws.
    const roundSeconds = ratioRoundSeconds(seconds);
    const signDeliveries = async () => {
      const deliveries = await Promise.all(
        Array.from(
          { length: WEBHOOKS_PER_SECOND_MAX * RATIO_ROUNDS * (roundSeconds + 1) },
          async () => {
            const init = await delivery(checkoutCompleted());
            return {
              method: "POST",
              path: "/functions/v1/payment-webhook",
              headers: init.headers as Record<string, string>,
              body: init.body as string,
            };
          },
        ),
      );
      let next = 0;
      return (): Wire => {
        if (next >= deliveries.length) throw new Error("Out of signed deliveries; sign more");
        return deliveries[next++];
      };
    };
    const both = async (placement: Placement) => {
      const out: Ratio[] = [];
      const routes = [
        ["POST broker-order", "order", () => order, orderScript],
        ["POST payment-webhook", "webhook", signDeliveries, webhookScript],
      ] as const;
      for (const [route, name, next, script] of routes) {
        const server = await fresh(`${name}-${placement.name}`);
        try {
          const r = await ratio(
            route,
            server,
            db.url,
            await next(),
            script,
            concurrency,
            seconds,
            placement,
          );
          logRatio(r, log);
          out.push(r);
        } finally {
          await done(server);
        }
      }
      return out;
    };
    log(`\n## ratios: ${concurrency} clients, ${seconds} s each, function vs pgbench (same SQL)`);
    log(`### shared cores`);
    ratios.push(...await both(SHARED));
    const place = dedicatedPlacement();
    const dedicated: PlatformReport["dedicated"] = typeof place === "string"
      ? { appCores: "", databaseCores: "", skipped: place }
      : { appCores: place.app!, databaseCores: place.db! };
    if (typeof place !== "string") {
      log(`### the database's backends on cores ${place.db}, everything else on ${place.app}`);
      try {
        ratios.push(...await both(place));
      } catch (err) {
        if (!(err instanceof PlacementError)) throw err;
        dedicated.skipped = err.message;
        log(`  skipped: ${err.message}`);
      } finally {
        const all = `0-${navigator.hardwareConcurrency - 1}`;
        await pin([Deno.pid], all).catch((err) =>
          log(`  the benchmark stays pinned to cores ${place.app}: ${err.message}`)
        );
      }
    }
    log(`\n## preflight: wrk, ${PREFLIGHT_CONNECTIONS} connections, against a bare Deno.serve`);
    const forPreflight = await fresh("preflight");
    const preflight = await preflightRatio(forPreflight, seconds).finally(() => done(forPreflight));
    log(
      preflight.skipped
        ? `  skipped: ${preflight.skipped}`
        : `  OPTIONS broker-order: ${preflight.preflightRps}/s vs bare ${preflight.bareRps}/s = ${preflight.ratio}; server CPU per request ${
          preflight.cpuUsPerRequest!.preflight
        } µs vs ${preflight.cpuUsPerRequest!.bare} µs`,
    );
    const report = {
      oneWayLatencyMs: ONE_WAY_MS,
      farDatabase: farDatabaseRoutes,
      ratios,
      dedicated,
      preflight,
    };
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

/** The table docs/performance.md keeps. */
export function platformMarkdown(r: PlatformReport): string {
  const lines = [
    `| route | round trips | p50 / p99 ms, database ${r.oneWayLatencyMs} ms away each way |`,
    "| --- | --: | --: |",
    ...r.farDatabase.map((f) => `| ${f.route} | ${f.roundTrips} | ${f.p50Ms} / ${f.p99Ms} |`),
    "",
    "| write path | cores | function req/s | pgbench tps, same SQL | ratio (goal ≥ 0.5) |",
    "| --- | --- | --: | --: | --: |",
    ...r.ratios.map((x) =>
      `| ${x.route} | ${
        x.placement === "shared"
          ? "shared"
          : `database ${r.dedicated.databaseCores}, rest ${r.dedicated.appCores}`
      } | ${x.functionRps} | ${x.pgbenchTps} | ${x.ratio} |`
    ),
    ...(r.dedicated.skipped
      ? [`| both | database on its own cores: not measured (${r.dedicated.skipped}) | | | |`]
      : []),
    "",
    "| path | function req/s | bare Deno.serve req/s | ratio (goal ≥ 0.5) |",
    "| --- | --: | --: | --: |",
    r.preflight.skipped
      ? `| CORS preflight | not measured: ${r.preflight.skipped} | | |`
      : `| CORS preflight | ${r.preflight.preflightRps} | ${r.preflight.bareRps} | ${r.preflight.ratio} |`,
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const flag = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 ? Deno.args[i + 1] : undefined;
  };
  const count = (name: string) => {
    const v = flag(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} needs a whole number, got ${v}`);
    return n;
  };
  await runPlatform({
    quick: Deno.args.includes("--quick"),
    seconds: count("--seconds"),
    farRequests: count("--far"),
    cpuProfDir: flag("--cpu-prof"),
  });
  Deno.exit(0);
}
