/**
 * `npm run chaos -- --seed <n> --seconds <s>`: issue 26's chaos run. Two instances of the local
 * server over one throwaway Postgres, each through its own fault proxy, the sandbox's simulators
 * in this process, seeded client loops, and a nemesis applying the seed's overlapping fault
 * schedule. At the end every fault is healed, the scheduled jobs run (as pg_cron would call
 * them), refused requests are retried as their senders would (Stripe redelivers, a client
 * retries with its Idempotency-Key), and the invariants account for everything. The report
 * (report.json, summary.txt, history.jsonl) goes to `.data/chaos/seed-<n>-<time>/`.
 *
 * Exit code 0 when every invariant that runs holds, 1 otherwise (the seed is printed).
 *
 * @example
 * ```ts
 * import { runChaos } from "./run.ts";
 *
 * const report = await runChaos({ seed: 1, seconds: 120 });
 * report.failed; // the invariants that failed
 * ```
 */
import { delay } from "../../shared/resilience/delay.ts";
import { describe, drawSchedule, FAULT_KINDS, type FaultEvent, type Heal } from "./faults.ts";
import { account, type Facts, type Outcome, type Recovery } from "./invariants.ts";
import { acked, deliver, type Ledger, newLedger, sendOrder, startLoad } from "./load.ts";
import { Rng } from "./prng.ts";
import { call, type World } from "./world.ts";
import { startWorld } from "./world.ts";

export interface ChaosOptions {
  seed: number;
  seconds: number;
  /** Client loops (default 4). */
  loops?: number;
  /** Where the report goes (default `.data/chaos/seed-<n>-<time>`). */
  outDir?: string;
  log?: (line: string) => void;
  /** Extra server environment (limits). */
  env?: Record<string, string>;
  /**
   * Who runs `internal.scheduled_jobs`: `harness` (default: this program POSTs each job's route
   * every 20 s and while settling, as pg_cron would) or `server` (the local server's own job
   * runner, once it exists: the harness then only waits, so a job the runner misses is found).
   */
  scheduler?: "harness" | "server";
}

export interface ChaosReport {
  seed: number;
  seconds: number;
  startedAt: string;
  durationMs: number;
  features: World["features"];
  scheduler: "harness" | "server";
  /** The history's time (ms since the world started) at which the schedule's 0 s is. */
  scheduleStartMs: number;
  /** Each fault as applied, in wall-clock ms (Date.now). */
  windows?: { kind: string; from: number; to: number | null; param?: number }[];
  /** When Discord's bucket answered 429 (wall-clock ms). */
  bucket429At?: number[];
  schedule: (FaultEvent & { line: string })[];
  faultCounts: Record<string, number>;
  requests: { total: number; byOp: Record<string, Record<string, number>> };
  recoveries: Recovery[];
  invariants: Outcome[];
  failed: string[];
  pending: string[];
  rss: Record<
    string,
    { lives: number; firstMb: number | null; lastMb: number | null; series: [number, number][] }
  >;
  instanceErrors: Record<string, string[]>;
  outDir: string;
  settle: { ms: number; rounds: number; unsettled: string[] };
}

/** Is `path` a route of this branch? An unknown route answers 404 "No such route.". */
async function hasRoute(w: World, path: string, init: RequestInit): Promise<boolean> {
  const res = await call(w, "feature-probe", path, init);
  const message = res.json<{ error?: { message?: string } }>()?.error?.message;
  return res.status !== 0 && !(res.status === 404 && message === "No such route.");
}

/** The routes of `internal.scheduled_jobs` plus feature routes a scheduler would call. */
async function jobPaths(w: World): Promise<string[]> {
  let paths: string[] = [];
  try {
    const rows = await w.sql<{ path: string }[]>`select path from internal.scheduled_jobs`;
    paths = rows.map((r) => r.path.replace(/^\/functions\/v1\//, ""));
  } catch { /* the database is down: this round has no jobs */ }
  if (w.features.orderSync && !paths.includes("broker-order/sync")) paths.push("broker-order/sync");
  if (w.features.catchUp && !paths.includes("payment-webhook/catch-up")) {
    paths.push("payment-webhook/catch-up");
  }
  return paths;
}

/** Runs every scheduled job once, as pg_cron + pg_net would (POST with the service key). */
async function runJobs(w: World, pick: number): Promise<Record<string, unknown>[]> {
  const answers: Record<string, unknown>[] = [];
  for (const path of await jobPaths(w)) {
    const res = await call(w, "scheduler", path, {
      method: "POST",
      headers: { authorization: `Bearer ${w.serviceKey}`, "content-type": "application/json" },
      body: "{}",
      pick,
    });
    answers.push({ path, status: res.status, body: res.json() });
  }
  return answers;
}

/** Polls status (every live instance) and quotes until all answer 200; ms, or null past `limitMs`. */
async function probeRecovery(w: World, token: string, limitMs = 30_000): Promise<number | null> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    const alive = w.alive();
    let ok = alive.length === w.instances.length;
    for (const inst of alive) {
      if (!ok) break;
      const status = await call(w, "probe", "status", { inst, timeoutMs: 3_000 });
      const quotes = status.status === 200
        ? await call(w, "probe", "market-data?symbols=AAPL", {
          inst,
          timeoutMs: 3_000,
          headers: { authorization: `Bearer ${token}` },
        })
        : status;
      ok = status.status === 200 && quotes.status === 200;
    }
    if (ok) return Math.round(performance.now() - started);
    await delay(100);
  }
  return null;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const startedAt = new Date().toISOString();
  const outDir = opts.outDir ??
    `.data/chaos/seed-${opts.seed}-${startedAt.replace(/[:.]/g, "-")}`;
  const rng = new Rng(opts.seed);
  log(
    `chaos: seed ${opts.seed}, ${opts.seconds} s (replay: npm run chaos -- --seed ${opts.seed} --seconds ${opts.seconds})`,
  );
  const w = await startWorld(opts.seed, { env: opts.env, log });
  const kills: Facts["kills"] = [];
  const timers: ReturnType<typeof setTimeout>[] = [];
  const active = new Map<number, Promise<Heal>>();
  const windows = new Map<number, World["windows"][number]>();
  let epoch = 0;
  try {
    const ledger = await newLedger(w);
    const probeToken = ledger.users[0].token;
    const service = { authorization: `Bearer ${w.serviceKey}`, "content-type": "application/json" };
    w.features.orderSync = await hasRoute(w, "broker-order/sync", {
      method: "POST",
      headers: service,
      body: "{}",
    });
    w.features.catchUp = await hasRoute(w, "payment-webhook/catch-up", {
      method: "POST",
      headers: service,
      body: "{}",
    });
    w.features.orderById = await hasRoute(w, `broker-order/${crypto.randomUUID()}`, {
      headers: { authorization: `Bearer ${probeToken}` },
    });
    log(`features: ${JSON.stringify(w.features)}`);

    const kinds = FAULT_KINDS.filter((k) => k.available?.(w) ?? true);
    const schedule = drawSchedule(rng.fork("nemesis"), opts.seconds, kinds);
    log(`schedule (${schedule.length} faults):`);
    for (const e of schedule) log(`  ${describe(e)}`);

    // The nemesis: each fault injected at its start and healed at its end; each end with no
    // other fault active is followed by a recovery probe.
    const recoveries: Recovery[] = [];
    const t0 = w.now();
    for (const e of schedule) {
      const kind = kinds.find((k) => k.name === e.kind)!;
      timers.push(setTimeout(() => {
        epoch++;
        if (e.kind === "kill-9") kills.push({ inst: e.target, t: w.now() });
        log(`  ${((w.now() - t0) / 1000).toFixed(1)}s inject ${describe(e)}`);
        const window = { kind: e.kind, from: Date.now(), to: Infinity, param: e.param };
        w.windows.push(window);
        active.set(e.n, kind.inject(w, e));
        windows.set(e.n, window);
      }, t0 + e.startMs - w.now()));
      timers.push(setTimeout(async () => {
        const heal = await active.get(e.n);
        try {
          await heal?.();
        } catch (err) {
          log(`  heal of #${e.n} failed: ${err instanceof Error ? err.message : err}`);
        }
        active.delete(e.n);
        windows.get(e.n)!.to = Date.now();
        log(`  ${((w.now() - t0) / 1000).toFixed(1)}s healed #${e.n} ${e.kind}`);
        if (active.size > 0) {
          recoveries.push({ fault: e.n, kind: e.kind, ms: null, overlapped: true });
          return;
        }
        const before = epoch;
        const ms = await probeRecovery(w, probeToken);
        recoveries.push({ fault: e.n, kind: e.kind, ms, overlapped: epoch !== before });
      }, t0 + e.startMs + e.durationMs - w.now()));
    }

    const load = startLoad(w, ledger, rng.fork("load"), opts.loops ?? 4);
    let bucket429s = 0;
    const sampler = setInterval(() => {
      for (; bucket429s < w.sims.discord.bucketRateLimited; bucket429s++) {
        w.bucket429At.push(Date.now());
      }
    }, 100);
    timers.push(sampler);
    // The scheduler: every job every 20 s during the run (pg_cron runs them every minute).
    const harnessRunsJobs = (opts.scheduler ?? "harness") === "harness";
    let schedulerOn = harnessRunsJobs;
    const scheduler = (async () => {
      for (let i = 0; schedulerOn; i++) {
        await delay(20_000);
        if (schedulerOn) await runJobs(w, i);
      }
    })();
    await delay(opts.seconds * 1000 - (w.now() - t0));

    // Heal everything still broken, stop the clients.
    log(`${((w.now() - t0) / 1000).toFixed(1)}s: end of the schedule; healing every fault`);
    for (const t of timers) clearTimeout(t);
    for (const [n, healing] of [...active]) {
      try {
        await (await healing)();
      } catch (err) {
        log(`  heal of #${n} failed: ${err}`);
      }
      windows.get(n)!.to = Date.now();
      active.delete(n);
    }
    for (const inst of w.instances) await w.respawn(inst);
    schedulerOn = false;
    await load.stop();
    await scheduler;
    const back = await probeRecovery(w, probeToken, 60_000);
    log(`service back ${back === null ? "NOT within 60 s" : `in ${back} ms`} after the last heal`);

    const settle = await settleAll(w, ledger, log, harnessRunsJobs);
    // Every acknowledged event once more: each is a duplicate now.
    for (const e of [...ledger.events.values()].filter(acked).slice(0, 30)) {
      await deliver(w, e, 0);
    }

    const facts = await gather(w, ledger, schedule, recoveries, kills);
    const invariants = account(facts);
    const report = buildReport(
      opts,
      startedAt,
      w,
      schedule,
      recoveries,
      invariants,
      outDir,
      settle,
    );
    report.scheduleStartMs = t0;
    report.windows = w.windows.map((x) => ({ ...x, to: Number.isFinite(x.to) ? x.to : null }));
    report.bucket429At = w.bucket429At;
    await writeReport(report, w, outDir);
    log(summaryText(report));
    return report;
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const t of timers) clearInterval(t);
    await w.close();
  }
}

/**
 * After the faults: retried and redelivered as their senders would, scheduled jobs run, until
 * nothing is left to settle or 120 s pass (what is left is then a finding, not a hang).
 */
async function settleAll(
  w: World,
  l: Ledger,
  log: (line: string) => void,
  runsJobs: boolean,
) {
  const started = performance.now();
  let rounds = 0;
  let unsettled: string[] = [];
  const orderDone = (o: { answers: number[] }) =>
    o.answers.length > 0 && o.answers[o.answers.length - 1] === 201;
  while (performance.now() - started < 120_000) {
    rounds++;
    for (const e of l.events.values()) {
      if (!e.withheld && !acked(e)) await deliver(w, e, rounds);
    }
    for (const o of l.orders.values()) if (!orderDone(o)) await sendOrder(w, o, rounds);
    if (runsJobs) await runJobs(w, rounds);
    let queued = -1;
    let behind = 0;
    try {
      [{ queued }] = await w.sql<{ queued: number }[]>`
        select count(*)::int as queued from internal.alerts where state = 'queued'`;
      // Orders the broker moved on (a fill a second after it accepted) that no sync has seen
      // yet: the schedules run again, as the next minute's sync would deployed.
      if (runsJobs && w.features.orderSync) behind = await ordersBehindBroker(w);
    } catch { /* retried next round */ }
    unsettled = [
      ...[...l.events.values()].filter((e) => !e.withheld && !acked(e)).map((e) =>
        `event ${e.event.id}`
      ),
      ...[...l.orders.values()].filter((o) => !orderDone(o)).map((o) =>
        `order ${o.key} (${o.answers.join(",")})`
      ),
      ...(queued !== 0 ? [`${queued} alerts queued`] : []),
      ...(behind !== 0 ? [`${behind} orders behind the broker`] : []),
    ];
    if (!unsettled.length) break;
    if (rounds % 5 === 1) log(`settling (round ${rounds}): ${unsettled.slice(0, 5).join("; ")}`);
    await delay(2_000);
  }
  const ms = Math.round(performance.now() - started);
  log(
    `settled in ${ms} ms, ${rounds} rounds${
      unsettled.length ? `; LEFT: ${unsettled.slice(0, 5).join("; ")}` : ""
    }`,
  );
  return { ms, rounds, unsettled };
}

/**
 * Orders not settled yet: local ones whose status or broker id is not the broker simulator's, and
 * market orders the broker is still filling (they move on within a second or two, so the final
 * state is read only once they are done).
 */
async function ordersBehindBroker(w: World): Promise<number> {
  const done = ["filled", "canceled", "expired", "rejected", "replaced", "done_for_day"];
  const filling =
    w.sims.broker.orders.filter((o) => o.type === "market" && !done.includes(o.status)).length;
  const broker = new Map(w.sims.broker.orders.map((o) => [o.client_order_id, o]));
  const local = await w.sql<{ client_order_id: string; status: string; broker_order_id: string }[]>`
    select client_order_id, status, broker_order_id::text from public.orders`;
  return filling + local.filter((o) => {
    const b = broker.get(o.client_order_id);
    return b !== undefined && (b.status !== o.status || b.id !== o.broker_order_id);
  }).length;
}

async function gather(
  w: World,
  ledger: Ledger,
  schedule: FaultEvent[],
  recoveries: Recovery[],
  kills: Facts["kills"],
): Promise<Facts> {
  const orders = await w.sql<Facts["orders"]>`
    select client_order_id, status, broker_order_id::text from public.orders`;
  const purchases = await w.sql<Facts["purchases"]>`
    select user_id::text, count(*)::int as n from public.purchases group by user_id`;
  const events = await w.sql<{ id: string }[]>`select id from internal.stripe_events`;
  const subs = await w.sql<{ id: string; status: string }[]>`
    select stripe_subscription_id as id, status from public.subscriptions`;
  const alerts = await w.sql<Facts["alerts"]>`
    select id::text, state, last_error, discord_message_id, repeat_of::text from internal.alerts`;
  const status = await call(w, "status", "status", {
    headers: { authorization: `Bearer ${w.serviceKey}` },
  });
  return {
    w,
    ledger,
    schedule,
    recoveries,
    orders,
    purchases,
    stripeEvents: new Set(events.map((e) => e.id)),
    subscriptions: new Map(subs.map((s) => [s.id, s.status])),
    alerts,
    status: status.json(),
    kills,
  };
}

function buildReport(
  opts: ChaosOptions,
  startedAt: string,
  w: World,
  schedule: FaultEvent[],
  recoveries: Recovery[],
  invariants: Outcome[],
  outDir: string,
  settle: ChaosReport["settle"],
): ChaosReport {
  const byOp: Record<string, Record<string, number>> = {};
  for (const o of w.history) {
    const key = o.status === 0 ? (o.error ?? "no answer") : String(o.status);
    (byOp[o.op] ??= {})[key] = (byOp[o.op][key] ?? 0) + 1;
  }
  const faultCounts: Record<string, number> = {};
  for (const e of schedule) faultCounts[e.kind] = (faultCounts[e.kind] ?? 0) + 1;
  const mb = (b: number | undefined) => b === undefined ? null : Math.round(b / 1048576);
  return {
    seed: opts.seed,
    seconds: opts.seconds,
    startedAt,
    durationMs: w.now(),
    features: w.features,
    scheduler: opts.scheduler ?? "harness",
    scheduleStartMs: 0,
    schedule: schedule.map((e) => ({ ...e, line: describe(e) })),
    faultCounts,
    requests: { total: w.history.length, byOp },
    recoveries,
    invariants,
    failed: invariants.filter((i) => i.result === "fail").map((i) => i.name),
    pending: invariants.filter((i) => i.result === "pending").map((i) => i.name),
    rss: Object.fromEntries(w.instances.map((i) => {
      const all = i.rss.flat();
      return [i.name, {
        lives: i.rss.length,
        firstMb: mb(all[0]?.[1]),
        lastMb: mb(all.at(-1)?.[1]),
        // Every 5 s: [ms since the world started, MB].
        series: all.filter((_, n) => n % 5 === 0).map(([t, b]) => [t, mb(b)!]),
      }];
    })),
    instanceErrors: Object.fromEntries(w.instances.map((i) => [i.name, i.errors.slice(0, 10)])),
    outDir,
    settle,
  };
}

/** The readable summary: the seed, the faults, each invariant's count. */
export function summaryText(r: ChaosReport): string {
  const lines = [
    `chaos run: seed ${r.seed}, ${r.seconds} s of faults, ${
      (r.durationMs / 1000).toFixed(0)
    } s in all`,
    `scheduler: ${r.scheduler}`,
    `features: ${
      Object.entries(r.features).map(([k, v]) => `${k} ${v ? "on" : "off"}`).join(", ")
    }`,
    `faults (${r.schedule.length}): ${
      Object.entries(r.faultCounts).map(([k, n]) => `${k} ×${n}`).join(", ")
    }`,
    ...r.schedule.map((e) => `  ${e.line}`),
    `requests: ${r.requests.total}`,
    ...Object.entries(r.requests.byOp).map(([op, counts]) =>
      `  ${op}: ${Object.entries(counts).map(([s, n]) => `${s} ×${n}`).join(", ")}`
    ),
    `recoveries: ${
      r.recoveries.map((x) =>
        `#${x.fault} ${x.overlapped ? "overlapped" : x.ms === null ? "NOT BACK" : `${x.ms} ms`}`
      ).join(", ")
    }`,
    `memory (MB, first → last): ${
      Object.entries(r.rss).map(([n, x]) => `${n} ${x.firstMb} → ${x.lastMb} (${x.lives} lives)`)
        .join(", ")
    }`,
    `settle: ${r.settle.ms} ms, ${r.settle.rounds} rounds${
      r.settle.unsettled.length ? `, left: ${r.settle.unsettled.length}` : ""
    }`,
    "invariants:",
    ...r.invariants.flatMap((i) => [
      `  [${i.result.toUpperCase()}] ${i.name}: ${i.checked} checked${
        i.failures.length ? `, ${i.failures.length} failed` : ""
      }${i.note ? ` (${i.note})` : ""}`,
      ...i.failures.slice(0, 8).map((f) => `      ${f}`),
    ]),
    r.failed.length
      ? `FAILED (seed ${r.seed}): ${r.failed.join("; ")}`
      : `all invariants that run hold (seed ${r.seed})`,
    `report: ${r.outDir}/report.json`,
  ];
  return lines.join("\n");
}

async function writeReport(report: ChaosReport, w: World, outDir: string) {
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(`${outDir}/report.json`, JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(`${outDir}/summary.txt`, summaryText(report) + "\n");
  await Deno.writeTextFile(
    `${outDir}/history.jsonl`,
    w.history.map((o) => JSON.stringify(o)).join("\n") + "\n",
  );
  await Deno.writeTextFile(
    `${outDir}/instances.log`,
    w.instances.map((i) => [`== ${i.name}`, ...i.errors, "-- tail", ...i.tail].join("\n")).join(
      "\n",
    ) + "\n",
  );
}

if (import.meta.main) {
  const values: Record<string, string | undefined> = { seconds: "120", loops: "4" };
  for (let i = 0; i < Deno.args.length; i++) {
    const m = /^--(\w+)(?:=(.*))?$/.exec(Deno.args[i]);
    if (m) values[m[1]] = m[2] ?? Deno.args[++i];
  }
  const seed = values.seed === undefined
    ? Math.floor(Math.random() * 2 ** 31)
    : Number(values.seed);
  const seconds = Number(values.seconds);
  if (!Number.isInteger(seed) || seed < 0 || !(seconds >= 20)) {
    console.error("usage: npm run chaos -- --seed <non-negative integer> --seconds <at least 20>");
    Deno.exit(2);
  }
  if (values.scheduler !== undefined && !["harness", "server"].includes(values.scheduler)) {
    console.error("--scheduler is harness (default) or server");
    Deno.exit(2);
  }
  const report = await runChaos({
    seed,
    seconds,
    loops: Number(values.loops),
    outDir: values.out,
    scheduler: values.scheduler as ChaosOptions["scheduler"],
  });
  Deno.exit(report.failed.length ? 1 : 0);
}
