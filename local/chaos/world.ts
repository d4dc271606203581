/**
 * The system under chaos and the harness's view of it: a throwaway Postgres cluster, two
 * `local/serve.ts` processes over it, each through its own TCP fault proxy, the sandbox's
 * simulators in this process (so faults are injected by steering them), and the history: every
 * request the clients made and every answer they got, in order, for the accounting at the end.
 */
import { delay } from "../../shared/resilience/delay.ts";
import postgres from "postgres";
import { type Sandbox, type Simulators, startSandbox } from "../sandbox/index.ts";
import { type FaultProxy, startFaultProxy } from "../../tests/support/fault_proxy.ts";
import { denoRun, pumpLines } from "../../tests/support/process.ts";
import { type Cluster, startCluster } from "./cluster.ts";

/** One request and its answer (status 0: no answer: connection dropped, aborted, timed out). */
export interface Op {
  /** ms since the run started, when the request was sent. */
  t: number;
  op: string;
  inst: string;
  status: number;
  ms: number;
  retryAfter?: string | null;
  code?: string;
  /** Set by the client mode in force (slow body, aborted). */
  mode?: string;
  error?: string;
}

/** A `local/serve.ts` process: its URL, pid and the RSS samples of this process's lifetime. */
export interface Instance {
  name: string;
  url: string | null;
  proxy: FaultProxy;
  child: Deno.ChildProcess | null;
  /** The output lines worth keeping (unhandled errors and the last lines). */
  errors: string[];
  tail: string[];
  /** One series per process lifetime: [ms since start, RSS bytes]. */
  rss: [number, number][][];
  restarts: number;
}

/** Routes that other branches add; each switches on its load kinds and invariants. */
export interface Features {
  /** `GET/DELETE /broker-order/{id}`. */
  orderById: boolean;
  /** `POST /broker-order/sync`. */
  orderSync: boolean;
  /** `POST /payment-webhook/catch-up`. */
  catchUp: boolean;
  /** A Stripe API simulator in the sandbox (`sims.stripe`). */
  stripeSim: boolean;
}

/** What the client loops do to their requests while a client fault is on. */
export interface ClientMode {
  slow: boolean;
  abort: boolean;
  /** Every third body stops halfway and never ends (the server owes a 408 and a close). */
  stallBody: boolean;
}

export interface World {
  seed: number;
  started: number;
  cluster: Cluster;
  sandbox: Sandbox;
  sims: Simulators & Record<string, unknown>;
  env: Record<string, string>;
  instances: Instance[];
  /** A direct connection to the cluster (not through a proxy), for the accounting. */
  sql: postgres.Sql;
  history: Op[];
  features: Features;
  clientMode: ClientMode;
  /** When (Date.now) the Discord simulator's bucket answered 429s, sampled every 100 ms. */
  bucket429At: number[];
  /** Every fault's window in wall-clock ms (Date.now), as the nemesis applied it. */
  windows: { kind: string; from: number; to: number; param?: number }[];
  serviceKey: string;
  /** Instances that answer now (not killed, listening). */
  alive(): Instance[];
  now(): number;
  kill(inst: Instance): Promise<void>;
  /** Starts a (killed) instance again; resolves when it listens. */
  respawn(inst: Instance): Promise<void>;
  close(): Promise<void>;
}

/** The limits the run's servers use: deadlines short enough that a fault is felt in seconds. */
export const CHAOS_LIMITS: Record<string, string> = {
  DB_CONNECT_TIMEOUT_MS: "1000",
  DB_QUERY_TIMEOUT_MS: "1500",
  DB_PROBE_MAX_MS: "500",
  BREAKER_RESET_MS: "3000",
  BROKER_TIMEOUT_MS: "1500",
  DISCORD_TIMEOUT_MS: "1500",
  MARKET_DATA_TIMEOUT_MS: "1500",
  IDEMPOTENCY_LOCK_SECONDS: "3",
  ORDER_RATE_LIMIT: "100000",
  MARKET_DATA_RATE_LIMIT: "100000",
  TOOLS_RATE_LIMIT: "100000",
  ALERT_RETRY_MAX_MS: "10000",
  ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS: "15",
  ALERT_FALLBACK_AFTER_SECONDS: "30",
  // A body that stalls is answered 408 after this (default 10 s), well within a client's 15 s.
  BODY_READ_TIMEOUT_MS: "2000",
};

/** Lines kept per instance (the tail); unhandled errors are all kept (up to 200). */
const TAIL_LINES = 40;

function rssOf(pid: number): number | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export async function startWorld(
  seed: number,
  opts: { env?: Record<string, string>; log?: (line: string) => void } = {},
): Promise<World> {
  const log = opts.log ?? console.log;
  const started = performance.now();
  const now = () => Math.round(performance.now() - started);
  const cluster = await startCluster();
  log(`postgres: throwaway cluster on port ${cluster.port} (${cluster.dir})`);
  const closers: (() => Promise<unknown>)[] = [() => cluster.destroy()];
  try {
    const sandbox = await startSandbox({ databaseUrl: cluster.url });
    closers.unshift(() => sandbox.close());
    const sims = sandbox.simulators as World["sims"];
    const env = { ...sandbox.env, ...CHAOS_LIMITS, ...opts.env };
    const instances: Instance[] = [];
    for (const name of ["a", "b"]) {
      const proxy = await startFaultProxy({ hostname: "127.0.0.1", port: cluster.port });
      closers.unshift(() => proxy.close());
      instances.push({
        name,
        url: null,
        proxy,
        child: null,
        errors: [],
        tail: [],
        rss: [],
        restarts: -1,
      });
    }

    const spawn = async (inst: Instance) => {
      const child = denoRun("local/serve.ts", {
        ...env,
        PORT: "0",
        SUPABASE_DB_URL: inst.proxy.url(cluster.url),
      });
      inst.child = child;
      inst.restarts++;
      const series: [number, number][] = [];
      inst.rss.push(series);
      let resolveUrl!: (url: string) => void;
      const ready = new Promise<string>((r) => resolveUrl = r);
      const onLine = (line: string) => {
        const m = /^Serving (http:\/\/[\d.:]+)\/functions\/v1/.exec(line);
        if (m) resolveUrl(m[1]);
        if (line.includes('"unhandled error"') && inst.errors.length < 200) inst.errors.push(line);
        if (!line.includes('"msg":"request"')) {
          inst.tail.push(line);
          if (inst.tail.length > TAIL_LINES) inst.tail.shift();
        }
      };
      void Promise.all([pumpLines(child.stdout, onLine), pumpLines(child.stderr, onLine)])
        .catch(() => {});
      const exited = child.status.then((s) => {
        throw new Error(`instance ${inst.name} exited with ${s.code} before listening`);
      });
      const timeout = new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`instance ${inst.name} did not listen in 90 s`)), 90_000)
      );
      inst.url = await Promise.race([ready, exited, timeout]);
      // Sampled for the whole life of the process, whatever the faults.
      const sampler = setInterval(() => {
        const rss = child.pid && rssOf(child.pid);
        if (rss) series.push([now(), rss]);
        else clearInterval(sampler);
      }, 1000);
      child.status.finally(() => clearInterval(sampler));
    };
    // One after the other: the first applies the migrations, the second finds them applied.
    for (const inst of instances) await spawn(inst);

    const kill = async (inst: Instance) => {
      const child = inst.child;
      inst.url = null;
      inst.child = null;
      if (!child) return;
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    };
    const sql = postgres(cluster.url, { max: 2, onnotice: () => {}, connect_timeout: 5 });
    const world: World = {
      seed,
      started,
      cluster,
      sandbox,
      sims,
      env,
      instances,
      sql,
      history: [],
      features: { orderById: false, orderSync: false, catchUp: false, stripeSim: "stripe" in sims },
      clientMode: { slow: false, abort: false, stallBody: false },
      windows: [],
      bucket429At: [],
      serviceKey: env.SUPABASE_SERVICE_ROLE_KEY,
      alive: () => instances.filter((i) => i.url !== null),
      now,
      kill,
      respawn: async (inst) => {
        if (inst.child) return;
        await spawn(inst);
      },
      async close() {
        for (const inst of instances) await kill(inst);
        await sql.end({ timeout: 1 }).catch(() => {});
        for (const close of closers) await close().catch(() => {});
      },
    };
    return world;
  } catch (err) {
    for (const close of closers) await close().catch(() => {});
    throw err;
  }
}

/** Where the client sends a request: one instance (by `pick`) of those alive. */
export interface CallOptions extends RequestInit {
  /** Default 15 s: a request that outlives it is recorded as no answer. */
  timeoutMs?: number;
  /** Leave the answer's body unread (the caller reads it). Default: read it into `text`. */
  inst?: Instance;
}

/** A request's answer as the history and the caller see it. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json<T = Record<string, unknown>>(): T | null;
}

/**
 * Sends `path` (under /functions/v1/) to `inst` (or the first alive instance), applying the
 * client mode in force (a slow body, an abort), and records the request and its answer.
 */
export async function call(
  w: World,
  op: string,
  path: string,
  init: CallOptions & { pick?: number } = {},
): Promise<Answer> {
  const alive = w.alive();
  const inst = init.inst ?? alive[(init.pick ?? 0) % Math.max(1, alive.length)];
  const t = w.now();
  const record: Op = { t, op, inst: inst?.name ?? "-", status: 0, ms: 0 };
  w.history.push(record);
  const none: Answer = { status: 0, headers: new Headers(), text: "", json: () => null };
  if (!inst?.url) {
    record.error = "no instance alive";
    return none;
  }
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, init.timeoutMs ?? 15_000);
  let body = init.body;
  if (w.clientMode.slow && typeof body === "string") {
    // A slow client: the body trickles in over about 1.5 s (well within the body deadline).
    record.mode = "slow";
    const bytes = new TextEncoder().encode(body);
    const chunk = Math.max(1, Math.ceil(bytes.length / 6));
    body = new ReadableStream<Uint8Array>({
      async pull(c) {
        const i = (c as unknown as { i?: number }).i ?? 0;
        if (i >= bytes.length) return c.close();
        (c as unknown as { i?: number }).i = i + chunk;
        await delay(250);
        c.enqueue(bytes.subarray(i, i + chunk));
      },
    });
  }
  if (w.clientMode.stallBody && typeof body === "string" && t % 3 === 1) {
    // A client that stops sending halfway: half the body, then nothing, never the end.
    record.mode = "stalled-body";
    const half = new TextEncoder().encode(body).subarray(0, Math.floor(body.length / 2));
    let sent = false;
    body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent) return new Promise<void>(() => {});
        sent = true;
        c.enqueue(half);
      },
    });
  }
  let abortTimer: ReturnType<typeof setTimeout> | undefined;
  if (w.clientMode.abort && (t % 3 === 0)) {
    // An aborted client: gone after a few ms, before or after the server acted.
    record.mode = "abort";
    abortTimer = setTimeout(() => controller.abort(), 5 + (t % 200));
  }
  try {
    const res = await fetch(`${inst.url}/functions/v1/${path}`, {
      ...init,
      body,
      signal: controller.signal,
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit);
    const text = await res.text();
    record.status = res.status;
    record.retryAfter = res.headers.get("retry-after");
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON: kept as text */ }
    const code = (parsed as { error?: { code?: string } } | null)?.error?.code;
    if (code) record.code = code;
    return {
      status: res.status,
      headers: res.headers,
      text,
      json: <T>() => parsed as T,
    };
  } catch (err) {
    record.error = timedOut
      ? "timeout"
      : record.mode === "abort"
      ? "aborted"
      : err instanceof Error
      ? err.name
      : String(err);
    return none;
  } finally {
    record.ms = w.now() - t;
    clearTimeout(timer);
    clearTimeout(abortTimer);
  }
}
