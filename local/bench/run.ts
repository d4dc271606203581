/**
 * `npm run bench`: the benchmark. For each scenario (scenarios.ts) it spawns the server under
 * test as its own process (the real local server on a fresh Postgres database with the sandbox
 * simulators as upstreams, or the bare baseline), loads it from separate generator processes
 * (load.ts) at fixed arrival rates with coordinated-omission-corrected percentiles, and finds
 * the highest rate held with p99 under 25 ms. Then each function's cold start. It writes
 * local/bench/results/latest.json and latest.svg (partial.* for --quick or --scenario runs)
 * and prints a Markdown table.
 *
 * Flags: `--quick` (short steps: a smoke run), `--scenario a,b` (only these; the baseline is
 * added when a target is read against it), `--soak seconds` (one scenario at 1,000 requests/s,
 * RSS sampled every 10 s; writes soak.json and soak.svg), `--generators n` (generator
 * processes, default 1), `--connections n` (per generator, default 128), `--no-cold-start`,
 * `--no-platform` (skip the far-database table and the pgbench ratios of local/bench/platform.ts),
 * `--cpu-prof dir` (a V8 CPU profile of each app server, `<dir>/<scenario>.cpuprofile`).
 *
 * Database: `TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test) names the
 * server; a database is created for the run and dropped at the end.
 *
 * A step passes when p99 < 25 ms, errors ≤ 0.1% and the generator kept its schedule (queueing
 * lag p99 under 10 ms, nothing left unsent). A failed step is tried once more in a full run
 * (the machine is shared); both attempts are in the JSON.
 */
import postgres from "postgres";
import { startSandbox } from "../sandbox/index.ts";
import { signToken } from "../sandbox/index.ts";
import { FRONTEND, JWT_SECRET, userToken } from "../../tests/support/env.ts";
import { denoRun } from "../../tests/support/process.ts";
import { barChart, soakChart } from "./chart.ts";
import { platformMarkdown, runPlatform } from "./platform.ts";
import {
  GeneratorProcess,
  HttpConnection,
  LAG_LIMIT_MS,
  mergeSteps,
  type Percentiles,
  type StepResult,
  type Target,
} from "./load.ts";
import {
  BASELINE_READY,
  cpuMsOf,
  cpuProfFlags,
  loadAverage,
  memoryOf,
  type Scenario,
  type ScenarioParams,
  SCENARIOS,
  SERVER_READY,
  type SpawnedProcess,
  spawnProcess,
} from "./scenarios.ts";

const ROOT = new URL("../../", import.meta.url);
const RESULTS = new URL("results/", import.meta.url);
const P99_LIMIT_MS = 25;
const ERROR_RATE_LIMIT = 0.001;
const COLD_START_TARGET_MS = 150;
const USERS = 1000;

// ---------------------------------------------------------------------------------------------
// Options

export interface BenchOptions {
  quick: boolean;
  scenarios?: string[];
  soakSeconds?: number;
  generators: number;
  connections: number;
  coldStart: boolean;
  /** The far-database table and the pgbench ratios (local/bench/platform.ts). Default true. */
  platform: boolean;
  /** Write a V8 CPU profile of each app server into this folder (for finding bottlenecks). */
  cpuProfDir?: string;
}

/** Parses the command line; throws naming a bad flag. */
export function parseArgs(args: string[]): BenchOptions {
  const opts: BenchOptions = {
    quick: false,
    generators: 1,
    connections: 128,
    coldStart: true,
    platform: true,
  };
  const int = (flag: string, v: string | undefined, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new Error(`${flag} needs a whole number 1–${max}, got ${v}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--quick") opts.quick = true;
    else if (a === "--no-cold-start") opts.coldStart = false;
    else if (a === "--no-platform") opts.platform = false;
    else if (a === "--cpu-prof") opts.cpuProfDir = args[++i] ?? "";
    else if (a === "--scenario") opts.scenarios = (args[++i] ?? "").split(",").filter(Boolean);
    else if (a === "--soak") opts.soakSeconds = int(a, args[++i], 3600);
    else if (a === "--generators") opts.generators = int(a, args[++i], 8);
    else if (a === "--connections") opts.connections = int(a, args[++i], 1024);
    else {throw new Error(
        `Unknown flag ${a} (--quick, --scenario name, --soak seconds, --generators n, --connections n, --no-cold-start, --no-platform, --cpu-prof dir)`,
      );}
  }
  for (const name of opts.scenarios ?? []) {
    if (!SCENARIOS.some((s) => s.name === name)) {
      throw new Error(`No scenario ${name}; there are ${SCENARIOS.map((s) => s.name).join(", ")}`);
    }
  }
  return opts;
}

/** Step lengths and the search, per mode. */
function plan(quick: boolean) {
  return quick
    ? {
      warmupRate: 500,
      warmupMs: 1_000,
      at1000Ms: 2_000,
      stepMs: 1_000,
      ladder: [500, 1000, 2000, 4000, 8000],
      refineSteps: 1,
      retries: 0,
      pauseMs: 200,
      coldStartRuns: 1,
    }
    : {
      warmupRate: 500,
      warmupMs: 2_000,
      at1000Ms: 10_000,
      stepMs: 3_000,
      ladder: [500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000],
      refineSteps: 3,
      retries: 1,
      pauseMs: 500,
      coldStartRuns: 5,
    };
}

// ---------------------------------------------------------------------------------------------
// Database

/** A fresh database on the Postgres server for this run (as tests/support/db.ts makes them). */
async function freshServerDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const server = Deno.env.get("TEST_DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
  const host = new URL(server).hostname;
  if (host !== "127.0.0.1" && host !== "localhost") {
    throw new Error(`The benchmark only runs against a local Postgres, not ${host}`);
  }
  const name = `bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(server, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const admin = postgres(server, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Steps

/** A step as reported (without the histograms). */
export interface StepReport {
  rate: number;
  durationMs: number;
  pass: boolean;
  /** Why it failed. */
  reasons: string[];
  scheduled: number;
  ok: number;
  errorRate: number;
  errors: StepResult["errors"];
  achievedRps: number;
  latency: Percentiles;
  service: Percentiles;
  lag: Percentiles;
  generator: StepResult["generator"];
  /** CPU of the server process over the step, percent of one core. */
  serverCpuPercent: number | null;
  loadAverage: number;
}

function judge(r: StepResult): string[] {
  const reasons: string[] = [];
  if (r.latency.p99 >= P99_LIMIT_MS) reasons.push(`p99 ${r.latency.p99.toFixed(1)} ms`);
  if (r.errorRate > ERROR_RATE_LIMIT) reasons.push(`errors ${(r.errorRate * 100).toFixed(2)}%`);
  if (r.generator.behindSchedule) {
    reasons.push(
      `generator behind schedule (lag p99 ${
        r.lag.p99.toFixed(1)
      } ms, cpu ${r.generator.cpuPercent}%)`,
    );
  }
  return reasons;
}

/** One scenario's server and generators, ready for steps. */
class Rig {
  constructor(
    readonly server: SpawnedProcess,
    readonly generators: GeneratorProcess[],
    readonly log: (line: string) => void,
  ) {}

  /** Runs one step at `rate` for `durationMs` across the generators. */
  async step(
    rate: number,
    durationMs: number,
    intervalMs?: number,
    onInterval?: (m: {
      atMs: number;
      latency: Percentiles;
      ok: number;
      errors: number;
    }) => void,
  ): Promise<StepReport> {
    const g = this.generators.length;
    await Promise.all(
      this.generators.map((gen, k) =>
        gen.prepare({ rate: rate / g, durationMs, phaseMs: (k * 1000) / rate, intervalMs })
      ),
    );
    const cpu0 = cpuMsOf(this.server.pid);
    const wall0 = performance.now();
    const startAt = Date.now() + 50;
    const results = await Promise.all(this.generators.map((gen) => gen.run(startAt, onInterval)));
    const cpu1 = cpuMsOf(this.server.pid);
    const wallMs = performance.now() - wall0 - 50;
    const r = mergeSteps(results);
    const reasons = judge(r);
    const report: StepReport = {
      rate,
      durationMs,
      pass: reasons.length === 0,
      reasons,
      scheduled: r.scheduled,
      ok: r.ok,
      errorRate: r.errorRate,
      errors: r.errors,
      achievedRps: Math.round(r.achievedRps),
      latency: round(r.latency),
      service: round(r.service),
      lag: round(r.lag),
      generator: r.generator,
      serverCpuPercent: cpu0 !== null && cpu1 !== null
        ? Math.round(((cpu1 - cpu0) / wallMs) * 100)
        : null,
      loadAverage: loadAverage(),
    };
    this.log(
      `  ${String(rate).padStart(6)}/s ${report.pass ? "pass" : "FAIL"}  p50 ${
        ms(report.latency.p50)
      }  p99 ${ms(report.latency.p99)}  p99.9 ${
        ms(report.latency.p999)
      }  ok ${report.ok}/${report.scheduled}  server cpu ${report.serverCpuPercent}%  gen cpu ${report.generator.cpuPercent}% lag99 ${
        ms(report.lag.p99)
      }  load ${report.loadAverage}${reasons.length ? `  (${reasons.join("; ")})` : ""}`,
    );
    return report;
  }

  async close() {
    await Promise.all(this.generators.map((g) => g.stop()));
    await this.server.stop();
  }
}

function round(p: Percentiles): Percentiles {
  const r = (n: number) => Math.round(n * 100) / 100;
  return {
    count: p.count,
    p50: r(p.p50),
    p95: r(p.p95),
    p99: r(p.p99),
    p999: r(p.p999),
    max: r(p.max),
    mean: r(p.mean),
  };
}

const ms = (n: number) => `${n.toFixed(2)}ms`;

// ---------------------------------------------------------------------------------------------
// Scenario runs

export interface ScenarioReport {
  name: string;
  title: string;
  usesDatabase: boolean;
  skipped?: string;
  at1000?: StepReport;
  /** Highest rate that passed; 0 when even the lowest step failed. */
  maxSustainedRps?: number;
  /** Why the first rate above it failed. */
  limitedBy?: string[];
  /** The search stopped because the generator, not the server, fell behind. */
  generatorBound?: boolean;
  /** maxSustainedRps over the baseline's in this run. */
  baselineRatio?: number;
  memory?: { rssMb: number; peakRssMb: number } | null;
  steps: StepReport[];
}

interface RunContext {
  opts: BenchOptions;
  plan: ReturnType<typeof plan>;
  env: Record<string, string>;
  params: ScenarioParams;
  log: (line: string) => void;
}

async function functionExists(name: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(`functions/${name}/index.ts`, ROOT));
    return true;
  } catch {
    return false;
  }
}

/** Spawns the scenario's server, sets it up, probes it and starts generators; or says why not. */
async function rigFor(s: Scenario, ctx: RunContext): Promise<Rig | string> {
  for (const name of s.needs) {
    if (!(await functionExists(name))) return `functions/${name}/index.ts does not exist yet`;
  }
  const server = s.server === "baseline"
    ? await spawnProcess({
      entry: "local/bench/baseline_server.ts",
      env: {},
      ready: BASELINE_READY,
    })
    : await spawnProcess({
      entry: "local/serve.ts",
      env: { ...ctx.env, ...s.env },
      ready: SERVER_READY,
      denoFlags: cpuProfFlags(ctx.opts.cpuProfDir, s.name),
    });
  const generators: GeneratorProcess[] = [];
  let handedOver = false;
  try {
    for (const name of s.needs) {
      const failed = server.output.find((l) => l.startsWith(`✗ ${name} did not boot`));
      if (failed) return failed.slice(2);
    }
    try {
      await s.setup?.({ url: server.url, params: ctx.params, env: { ...ctx.env, ...s.env } });
    } catch (err) {
      return `setup failed: ${err instanceof Error ? err.message : err}`;
    }
    const target: Target = { hostname: "127.0.0.1", port: Number(new URL(server.url).port) };
    // One request exactly as the generators will send it must get an expected answer.
    const probe = await s.source(ctx.params, target, { index: 999, of: 1 });
    const [request] = await probe.build(0, 1);
    const conn = await HttpConnection.open(target);
    let status: number;
    try {
      status = await conn.exchange(request, 10_000);
    } finally {
      conn.close();
    }
    if (!s.expect.includes(status)) {
      return `a probe request answered ${status}, expected ${s.expect.join("/")}`;
    }
    for (let k = 0; k < ctx.opts.generators; k++) {
      generators.push(
        await GeneratorProcess.start({
          module: new URL("./scenarios.ts", import.meta.url).href,
          scenario: s.name,
          params: ctx.params,
          target,
          expect: s.expect,
          index: k,
          of: ctx.opts.generators,
          maxConnections: ctx.opts.connections,
        }),
      );
    }
    handedOver = true;
    return new Rig(server, generators, ctx.log);
  } finally {
    if (!handedOver) {
      await Promise.all(generators.map((g) => g.stop()));
      await server.stop();
    }
  }
}

/** Measures one scenario: warm-up, 1,000 requests/s, then the search for the highest rate. */
async function runScenario(s: Scenario, ctx: RunContext): Promise<ScenarioReport> {
  ctx.log(`\n## ${s.name}: ${s.title}`);
  let rig: Rig | string;
  try {
    rig = await rigFor(s, ctx);
  } catch (err) {
    rig = `could not start: ${err instanceof Error ? err.message.split("\n")[0] : err}`;
  }
  if (typeof rig === "string") {
    ctx.log(`  skipped: ${rig}`);
    return { name: s.name, title: s.title, usesDatabase: s.usesDatabase, skipped: rig, steps: [] };
  }
  const p = ctx.plan;
  const steps: StepReport[] = [];
  const pause = () => new Promise((r) => setTimeout(r, p.pauseMs));
  try {
    // Warm-up (not judged): the server's JIT, its pool and the generator's connections.
    await rig.step(p.warmupRate, p.warmupMs);
    await rig.step(1000, p.warmupMs);
    await pause();
    const at1000 = await rig.step(1000, p.at1000Ms);
    steps.push(at1000);
    await pause();
    const attempt = async (rate: number): Promise<StepReport> => {
      let r = rate === 1000 && at1000.pass ? at1000 : await rig.step(rate, p.stepMs);
      if (r !== at1000) steps.push(r);
      await pause();
      for (let k = 0; k < p.retries && !r.pass; k++) {
        r = await rig.step(rate, p.stepMs);
        steps.push(r);
        await pause();
      }
      return r;
    };
    let best = 0;
    let firstFail: StepReport | undefined;
    for (const rate of p.ladder) {
      const r = await attempt(rate);
      if (!r.pass) {
        firstFail = r;
        break;
      }
      best = rate;
    }
    if (firstFail) {
      let lo = best, hi = firstFail.rate;
      for (let k = 0; k < p.refineSteps && hi - lo > Math.max(100, lo * 0.05); k++) {
        const mid = Math.round((lo + hi) / 2 / 50) * 50;
        const r = await attempt(mid);
        if (r.pass) lo = mid;
        else {
          hi = mid;
          firstFail = r;
        }
      }
      best = lo;
    }
    const memory = memoryOf(rig.server.pid);
    const report: ScenarioReport = {
      name: s.name,
      title: s.title,
      usesDatabase: s.usesDatabase,
      at1000,
      maxSustainedRps: best,
      limitedBy: firstFail?.reasons ?? [`held the highest step (${p.ladder.at(-1)}/s)`],
      generatorBound: firstFail ? firstFail.generator.behindSchedule : true,
      memory,
      steps,
    };
    ctx.log(
      `  => sustains ${best}/s (${report.limitedBy!.join("; ")}); peak RSS ${memory?.peakRssMb} MB`,
    );
    return report;
  } finally {
    await rig.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Cold starts

export interface ColdStart {
  name: string;
  kind: "function" | "server" | "baseline";
  runsMs: number[];
  medianMs: number | null;
  maxMs: number | null;
  error?: string;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Process start to first good answer: spawns `entry` with a fixed PORT and asks `path` every
 * 2 ms until an answer comes; good when `ok(status)`. Bounded by 30 s.
 */
async function coldStartOnce(
  entry: string,
  env: Record<string, string>,
  path: string,
  ok: (status: number) => boolean,
): Promise<number> {
  const port = freePort();
  const started = performance.now();
  const child = denoRun(entry, { NO_COLOR: "1", ...env, PORT: String(port), HOST: "127.0.0.1" }, {
    stdout: "null",
  });
  const stderr = (async () => {
    let text = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      if (text.length < 4000) text += chunk;
    }
    return text;
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  try {
    const deadline = started + 30_000;
    while (performance.now() < deadline && !exited) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, {
          signal: AbortSignal.timeout(5_000),
        });
        await res.body?.cancel();
        const elapsed = performance.now() - started;
        if (!ok(res.status)) throw new Error(`first answer was ${res.status}`);
        return Math.round(elapsed * 10) / 10;
      } catch (err) {
        if (err instanceof Error && err.message.startsWith("first answer")) throw err;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(exited ? `exited: ${(await stderr).slice(0, 300)}` : "no answer within 30 s");
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await status;
    clearTimeout(timer);
    await stderr;
  }
}

async function measureColdStarts(ctx: RunContext): Promise<ColdStart[]> {
  ctx.log("\n## cold starts (process start to first answer)");
  const targets: {
    name: string;
    kind: ColdStart["kind"];
    entry: string;
    path: string;
    ok: (s: number) => boolean;
  }[] = [
    {
      name: "baseline",
      kind: "baseline",
      entry: "local/bench/baseline_server.ts",
      path: "/",
      ok: (s) => s === 200,
    },
    {
      name: "local server (all functions)",
      kind: "server",
      entry: "local/serve.ts",
      path: "/functions/v1/status",
      ok: (s) => s === 200,
    },
  ];
  const names: string[] = [];
  for await (const e of Deno.readDir(new URL("functions/", ROOT))) {
    if (e.isDirectory && (await functionExists(e.name))) names.push(e.name);
  }
  for (const name of names.sort()) {
    // Any answer from the function's own routes (a 401 or 405 too) shows it booted; a 503 is
    // BOOT_ERROR or its dependencies failing.
    targets.push({
      name,
      kind: "function",
      entry: `functions/${name}/index.ts`,
      path: `/${name}`,
      ok: (s) => s < 500,
    });
  }
  const out: ColdStart[] = [];
  for (const t of targets) {
    const runsMs: number[] = [];
    let error: string | undefined;
    try {
      // One unrecorded run first: Deno transpiles and caches changed modules on first load.
      await coldStartOnce(t.entry, ctx.env, t.path, t.ok);
      for (let k = 0; k < ctx.plan.coldStartRuns; k++) {
        runsMs.push(await coldStartOnce(t.entry, ctx.env, t.path, t.ok));
      }
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    const sorted = [...runsMs].sort((a, b) => a - b);
    const c: ColdStart = {
      name: t.name,
      kind: t.kind,
      runsMs,
      medianMs: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null,
      maxMs: sorted.length ? sorted.at(-1)! : null,
      ...(error ? { error } : {}),
    };
    ctx.log(
      `  ${t.name.padEnd(30)} ${
        error ? `failed: ${error}` : `median ${c.medianMs} ms, max ${c.maxMs} ms`
      }`,
    );
    out.push(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Targets and output

export interface Target_ {
  target: string;
  /** null: not measured in this run. */
  met: boolean | null;
  detail: string;
}

function evaluateTargets(reports: ScenarioReport[], cold: ColdStart[] | null): Target_[] {
  const measured = reports.filter((r) => !r.skipped);
  const skipped = reports.filter((r) => r.skipped).map((r) => r.name);
  const out: Target_[] = [];
  const held = measured.filter((r) => r.name !== "baseline");
  out.push({
    target: "every scenario holds 1,000 requests/s with p99 < 25 ms",
    met: held.length ? held.every((r) => r.at1000?.pass) : null,
    detail: held.map((r) =>
      `${r.name} ${r.at1000?.pass ? "yes" : "no"} (p99 ${r.at1000?.latency.p99} ms)`
    ).join(", ") +
      (skipped.length ? `; not measured: ${skipped.join(", ")}` : ""),
  });
  const base = measured.find((r) => r.name === "baseline");
  const shares = SCENARIOS.filter((s) => s.baselineShareTarget);
  const shareRows = shares.map((s) => measured.find((r) => r.name === s.name)).filter((r) =>
    r !== undefined
  );
  out.push({
    target:
      "paths needing no database (preflight, 401, cached quotes) reach half the baseline's throughput",
    met: base && shareRows.length ? shareRows.every((r) => (r.baselineRatio ?? 0) >= 0.5) : null,
    detail: base
      ? shareRows.map((r) => `${r.name} ${(r.baselineRatio ?? 0).toFixed(2)}×`).join(", ") +
        (base.generatorBound
          ? " (the baseline hit the generator's limit: its true rate is higher)"
          : "")
      : "baseline not measured",
  });
  const rps = SCENARIOS.filter((s) => s.rpsTarget).map((s) => ({
    s,
    r: measured.find((r) => r.name === s.name),
  }));
  out.push({
    target: "broker-order and payment-webhook reach 2,500 requests/s",
    met: rps.every((x) => x.r)
      ? rps.every((x) => (x.r!.maxSustainedRps ?? 0) >= x.s.rpsTarget!)
      : null,
    detail: rps.map((x) => `${x.s.name} ${x.r ? `${x.r.maxSustainedRps}/s` : "not measured"}`).join(
      ", ",
    ),
  });
  const fns = cold?.filter((c) => c.kind === "function") ?? [];
  out.push({
    target: `each function boots in under ${COLD_START_TARGET_MS} ms`,
    met: fns.length
      ? fns.every((c) => c.medianMs !== null && c.medianMs < COLD_START_TARGET_MS)
      : null,
    detail: fns.length
      ? fns.map((c) => `${c.name} ${c.medianMs ?? "failed"} ms`).join(", ") +
        `; bare Deno.serve ${cold?.find((c) => c.kind === "baseline")?.medianMs} ms`
      : "not measured (--no-cold-start)",
  });
  out.push({
    target: "memory flat over 5 minutes at 1,000 requests/s",
    met: null,
    detail: "measured by `npm run bench -- --soak 300` (local/bench/results/soak.json)",
  });
  return out;
}

const cell = (n: number | undefined | null, digits = 1) =>
  n === undefined || n === null ? "–" : n.toFixed(digits);

/** The table docs/performance.md keeps. */
export function markdown(
  reports: ScenarioReport[],
  cold: ColdStart[] | null,
  targets: Target_[],
): string {
  const lines = [
    "| scenario | sustained req/s (p99 < 25 ms) | × baseline | p50 | p95 | p99 | p99.9 (ms, at 1,000 req/s) | peak RSS MB | limited by |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const r of reports) {
    if (r.skipped) {
      lines.push(`| ${r.name} | skipped | | | | | | | ${r.skipped} |`);
      continue;
    }
    const l = r.at1000!.latency;
    lines.push(
      `| ${r.name} | ${r.maxSustainedRps}${r.generatorBound ? "+" : ""} | ${
        r.baselineRatio === undefined ? "–" : r.baselineRatio.toFixed(2)
      } | ${cell(l.p50, 2)} | ${cell(l.p95, 2)} | ${cell(l.p99, 2)} | ${cell(l.p999, 2)} | ${
        cell(r.memory?.peakRssMb)
      } | ${(r.generatorBound ? "generator: " : "") + (r.limitedBy ?? []).join("; ")} |`,
    );
  }
  if (cold) {
    lines.push(
      "",
      "| cold start (process start to first answer) | median ms | max ms |",
      "| --- | ---: | ---: |",
    );
    for (const c of cold) lines.push(`| ${c.name} | ${c.medianMs ?? c.error} | ${c.maxMs ?? ""} |`);
  }
  lines.push("", "| target | met |", "| --- | --- |");
  for (const t of targets) {
    lines.push(
      `| ${t.target} | ${
        t.met === null ? "not measured" : t.met ? "yes" : "**no**"
      }: ${t.detail} |`,
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Soak

async function runSoak(ctx: RunContext, seconds: number, name: string) {
  const s = SCENARIOS.find((x) => x.name === name)!;
  ctx.log(`\n## soak: ${s.name} at 1,000 requests/s for ${seconds} s, RSS every 10 s`);
  const rig = await rigFor(s, ctx);
  if (typeof rig === "string") throw new Error(`Soak scenario ${name} cannot run: ${rig}`);
  const samples: {
    atSeconds: number;
    rssMb: number;
    p99Ms: number | null;
    ok: number;
    errors: number;
  }[] = [];
  try {
    await rig.step(ctx.plan.warmupRate, 5_000);
    const first = memoryOf(rig.server.pid);
    samples.push({ atSeconds: 0, rssMb: first?.rssMb ?? 0, p99Ms: null, ok: 0, errors: 0 });
    const step = await rig.step(1000, seconds * 1000, 10_000, (m) => {
      const mem = memoryOf(rig.server.pid);
      samples.push({
        atSeconds: Math.round(m.atMs / 1000),
        rssMb: mem?.rssMb ?? 0,
        p99Ms: Math.round(m.latency.p99 * 100) / 100,
        ok: m.ok,
        errors: m.errors,
      });
      ctx.log(
        `  ${String(Math.round(m.atMs / 1000)).padStart(5)} s  RSS ${mem?.rssMb} MB  p99 ${
          ms(m.latency.p99)
        }  ok ${m.ok} errors ${m.errors}`,
      );
    });
    const memory = memoryOf(rig.server.pid);
    // Flat: the last minute's RSS within 10% of the RSS after the first minute.
    const after1 = samples.filter((x) => x.atSeconds >= Math.min(60, seconds / 3));
    const lastMin = samples.filter((x) => x.atSeconds >= seconds - 60);
    const avg = (xs: typeof samples) =>
      xs.reduce((a, x) => a + x.rssMb, 0) / Math.max(1, xs.length);
    const early = after1.slice(0, 3);
    const growthMb = Math.round((avg(lastMin) - avg(early)) * 10) / 10;
    const flat = early.length > 0 && growthMb <= 0.1 * avg(early);
    const out = {
      scenario: s.name,
      seconds,
      rate: 1000,
      at: new Date().toISOString(),
      step: { ...step },
      samples,
      memory,
      growthMb,
      flat,
    };
    await Deno.mkdir(RESULTS, { recursive: true });
    await Deno.writeTextFile(new URL("soak.json", RESULTS), JSON.stringify(out, null, 2) + "\n");
    await Deno.writeTextFile(
      new URL("soak.svg", RESULTS),
      soakChart(samples, { title: `Soak: ${s.name} at 1,000 req/s for ${seconds} s` }),
    );
    ctx.log(
      `\nSoak ${s.name}: RSS ${avg(early).toFixed(1)} MB after the first minute, ${
        avg(lastMin).toFixed(1)
      } MB in the last: ${
        flat ? "flat" : "GROWING"
      } (${growthMb} MB); p99 over the run ${step.latency.p99} ms, errors ${
        (step.errorRate * 100).toFixed(3)
      }%.`,
    );
    ctx.log("Wrote local/bench/results/soak.json and soak.svg");
  } finally {
    await rig.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(opts: BenchOptions) {
  const log = (line: string) => console.log(line);
  const p = plan(opts.quick);
  const startedAt = new Date().toISOString();
  const load0 = loadAverage();
  const runId = crypto.randomUUID().slice(0, 8);
  log(
    `Benchmark ${
      opts.quick ? "(quick)" : ""
    } run ${runId}: ${navigator.hardwareConcurrency} cores, load ${load0}`,
  );
  const db = await freshServerDatabase();
  const sandbox = await startSandbox({
    databaseUrl: db.url,
    jwtSecret: JWT_SECRET,
    frontendUrl: FRONTEND,
  });
  try {
    const env: Record<string, string> = { ...sandbox.env, LOG_LEVEL: "info" };
    const userIds = Array.from({ length: USERS }, () => crypto.randomUUID());
    const params: ScenarioParams = {
      runId,
      origin: FRONTEND,
      userIds,
      userTokens: await Promise.all(userIds.map((id) => userToken(id))),
      forgedToken: await signToken("not-the-project-secret-but-just-as-long-0123456789", {
        sub: crypto.randomUUID(),
        role: "authenticated",
        aud: "authenticated",
      }),
      limitedToken: await userToken(),
      webhookSecret: env.STRIPE_WEBHOOK_SECRET.split(",")[0],
      symbols: "AAPL,MSFT,NVDA",
    };
    const ctx: RunContext = { opts, plan: p, env, params, log };

    if (opts.soakSeconds) {
      await runSoak(ctx, opts.soakSeconds, opts.scenarios?.[0] ?? "broker-order");
      return;
    }
    let selected = opts.scenarios
      ? SCENARIOS.filter((s) => opts.scenarios!.includes(s.name))
      : SCENARIOS;
    if (
      selected.some((s) => s.baselineShareTarget) && !selected.some((s) => s.name === "baseline")
    ) {
      selected = [SCENARIOS.find((s) => s.name === "baseline")!, ...selected];
    }
    const reports: ScenarioReport[] = [];
    for (const s of selected) reports.push(await runScenario(s, ctx));
    const base = reports.find((r) => r.name === "baseline" && !r.skipped);
    for (const r of reports) {
      if (base?.maxSustainedRps && r.maxSustainedRps !== undefined) {
        r.baselineRatio = Math.round((r.maxSustainedRps / base.maxSustainedRps) * 100) / 100;
      }
    }
    const cold = opts.coldStart ? await measureColdStarts(ctx) : null;
    const targets = evaluateTargets(reports, cold);
    // The platform's story: round trips and latency with the database 5 ms away, and the write
    // paths against pgbench running their own SQL (local/bench/platform.ts).
    const platform = opts.platform
      ? await runPlatform({ quick: opts.quick, log, cpuProfDir: opts.cpuProfDir }).catch((err) => {
        log(`platform: skipped (${err instanceof Error ? err.message : err})`);
        return null;
      })
      : null;
    const result = {
      version: 1,
      runId,
      mode: opts.quick ? "quick" : "full",
      startedAt,
      finishedAt: new Date().toISOString(),
      machine: {
        cores: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        loadAverageStart: load0,
        loadAverageEnd: loadAverage(),
        note:
          "Shared machine: other processes competed for the same cores; see each step's loadAverage.",
      },
      method: {
        openLoop: "fixed arrival rate; latency from each request's intended send time (wrk2-style)",
        histogram: "HdrHistogram (hdr-histogram-js), µs, 3 significant digits",
        p99LimitMs: P99_LIMIT_MS,
        errorRateLimit: ERROR_RATE_LIMIT,
        generatorLagLimitMs: LAG_LIMIT_MS,
        generators: opts.generators,
        connectionsPerGenerator: opts.connections,
        plan: p,
        server:
          "local/serve.ts as its own process, LOG_LEVEL=info, sandbox simulators as upstreams, fresh Postgres database",
      },
      scenarios: reports,
      coldStarts: cold,
      targets,
      platform,
    };
    // Only a full run of every scenario replaces the committed figures.
    const stem = opts.quick || opts.scenarios ? "partial" : "latest";
    await Deno.mkdir(RESULTS, { recursive: true });
    await Deno.writeTextFile(
      new URL(`${stem}.json`, RESULTS),
      JSON.stringify(result, null, 2) + "\n",
    );
    await Deno.writeTextFile(
      new URL(`${stem}.svg`, RESULTS),
      barChart(
        reports.map((r) => ({
          name: r.name,
          maxRps: r.maxSustainedRps ?? null,
          generatorBound: r.generatorBound,
          p99At1000: r.at1000?.latency.p99 ?? null,
          skipped: r.skipped,
        })),
        {
          p99LimitMs: P99_LIMIT_MS,
          title: `Edge functions, ${navigator.hardwareConcurrency} shared cores, ${
            startedAt.slice(0, 10)
          }${opts.quick ? " (quick run)" : ""}`,
        },
      ),
    );
    log("\n" + markdown(reports, cold, targets));
    if (platform) log("\n" + platformMarkdown(platform));
    log(`\nWrote local/bench/results/${stem}.json and ${stem}.svg`);
  } finally {
    await sandbox.close();
    await db.drop();
  }
}

if (import.meta.main) {
  let opts: BenchOptions;
  try {
    opts = parseArgs(Deno.args);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    Deno.exit(2);
  }
  await main(opts);
  Deno.exit(0);
}
