/**
 * What the benchmark measures: each scenario names the server it loads (the bare baseline or
 * the real local server), the statuses that count as success, the server variables it needs,
 * a setup run once against the live server (warm a cache, use up a quota), and how its
 * requests are built inside a generator process before the timed run (`requestSource`).
 * Also the process helpers: spawning a server as its own process and reading its memory and
 * CPU from /proc.
 *
 * @example
 * const server = await spawnProcess({ entry: "local/bench/baseline_server.ts", env: {}, ready: BASELINE_READY });
 * memoryOf(server.pid); // { rssMb, peakRssMb }
 * await server.stop();
 */
import type { RequestSource, Target } from "./load.ts";
import { encodeRequest, type RequestSpec } from "./load.ts";
import { denoRun } from "../../tests/support/process.ts";

// ---------------------------------------------------------------------------------------------
// Processes

/** A server (or any child) spawned by the benchmark, with its pid for /proc. */
export interface SpawnedProcess {
  pid: number;
  /** The base URL from its ready line. */
  url: string;
  /** The last lines of its stdout and stderr (bounded). */
  output: string[];
  /** `performance.now()` just before the spawn, and when the ready line was seen. */
  spawnedAt: number;
  readyAt: number;
  /** SIGTERM, then SIGKILL after 10 s; the exit code. */
  stop(): Promise<number>;
}

/** `npm start`'s ready line. */
export const SERVER_READY = /^Serving (http:\/\/[\d.:]+)\/functions\/v1/;
/** The baseline's ready line. */
export const BASELINE_READY = /^Serving (http:\/\/[\d.:]+)\//;
/** Lines of output kept per process. */
const OUTPUT_LINES = 300;
/** Bytes of output kept per stream once the process is ready (about OUTPUT_LINES access lines). */
const OUTPUT_BYTES = 64 * 1024;

/**
 * A stream's output: split into lines until the ready line is seen, then only its last
 * OUTPUT_BYTES kept as they came, and split when read. Under load the server writes tens of
 * thousands of access-log lines a second; decoding and splitting each one here took a share of
 * the cores from the measurement (a preflight run went ~10 % faster without it).
 */
class OutputTail {
  #chunks: Uint8Array[] = [];
  #bytes = 0;

  keep(chunk: Uint8Array) {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    while (this.#chunks.length > 1 && this.#bytes - this.#chunks[0].length >= OUTPUT_BYTES) {
      this.#bytes -= this.#chunks.shift()!.length;
    }
  }

  lines(): string[] {
    const all = new Uint8Array(this.#bytes);
    let at = 0;
    for (const c of this.#chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(all).split("\n").filter((l) => l !== "");
  }
}

/**
 * Runs `deno run -A <entry>` from the project root with exactly `env` (plus PATH and HOME) and
 * resolves once a line of its output matches `ready` (group 1 is the base URL). Its output is
 * drained all along (a full pipe would stall the server) and only the last lines are kept.
 */
export async function spawnProcess(opts: {
  entry: string;
  env: Record<string, string>;
  ready?: RegExp;
  timeoutMs?: number;
  /** Extra `deno run` flags (e.g. `--cpu-prof`). */
  denoFlags?: string[];
}): Promise<SpawnedProcess> {
  const ready = opts.ready ?? SERVER_READY;
  const spawnedAt = performance.now();
  const child = denoRun(opts.entry, { NO_COLOR: "1", PORT: "0", ...opts.env }, {
    flags: opts.denoFlags,
  });
  const tails = [new OutputTail(), new OutputTail()];
  const lines = () => [...tails[0].lines(), ...tails[1].lines()].slice(-OUTPUT_LINES);
  let isReady = false;
  let onReady: (url: string) => void = () => {};
  const readyUrl = new Promise<string>((resolve) => (onReady = resolve));
  const pump = async (stream: ReadableStream<Uint8Array>, tail: OutputTail) => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      tail.keep(chunk);
      if (isReady) continue;
      pending += decoder.decode(chunk, { stream: true });
      const complete = pending.split("\n");
      pending = complete.pop()!;
      for (const line of complete) {
        const m = ready.exec(line);
        if (m) {
          isReady = true;
          onReady(m[1]);
          break;
        }
      }
    }
  };
  const pumps = Promise.all([pump(child.stdout, tails[0]), pump(child.stderr, tails[1])]);
  const status = child.status;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    const s = await status;
    clearTimeout(timer);
    await pumps;
    return s.code;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const url = await Promise.race([
      readyUrl,
      status.then((s) => {
        throw new Error(`${opts.entry} exited with ${s.code}:\n${lines().slice(-20).join("\n")}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${opts.entry} did not start:\n${lines().slice(-20).join("\n")}`)),
          opts.timeoutMs ?? 60_000,
        );
      }),
    ]);
    return {
      pid: child.pid,
      url,
      get output() {
        return lines();
      },
      spawnedAt,
      readyAt: performance.now(),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** `deno run` flags that write a V8 CPU profile `<dir>/<name>.cpuprofile` when the process exits. */
export function cpuProfFlags(dir: string | undefined, name: string): string[] | undefined {
  if (!dir) return undefined;
  return ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name}.cpuprofile`];
}

/** Current and peak resident memory of a process (VmRSS, VmHWM), in MB; null once it is gone. */
export function memoryOf(pid: number): { rssMb: number; peakRssMb: number } | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return { rssMb: round1(kb("VmRSS") / 1024), peakRssMb: round1(kb("VmHWM") / 1024) };
  } catch {
    return null;
  }
}

/** CPU time (user + system, all threads) a process has used, in ms; null once it is gone. */
export function cpuMsOf(pid: number): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

/** The machine's 1-minute load average (other people share these cores). */
export function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;

// ---------------------------------------------------------------------------------------------
// Scenarios

/** Values every scenario's requests are built from, made once per run by the orchestrator. */
export interface ScenarioParams {
  runId: string;
  /** An allowed browser origin (FRONTEND_URL). */
  origin: string;
  /** Tokens of distinct users: load is spread over them as real users would spread it. */
  userTokens: string[];
  /** User ids for Stripe checkouts. */
  userIds: string[];
  /** A token signed with the wrong key (the 401 path). */
  forgedToken: string;
  /** A user who has used up their order quota (the 429 path). */
  limitedToken: string;
  /** The payment-webhook's signing secret. */
  webhookSecret: string;
  /** Symbols of the cached market-data requests. */
  symbols: string;
}

/** What a scenario's setup can reach. */
export interface SetupContext {
  /** Base URL of the server under test. */
  url: string;
  params: ScenarioParams;
  env: Record<string, string>;
}

export interface Scenario {
  name: string;
  /** What a request of it does, for the table. */
  title: string;
  server: "baseline" | "app";
  /** Function folders it needs. */
  needs: string[];
  /** Touches Postgres on every request. */
  usesDatabase: boolean;
  /** Target: at least this share of the baseline's sustained rate (paths needing no database). */
  baselineShareTarget?: number;
  /** Target: at least this many requests/s sustained. */
  rpsTarget?: number;
  expect: number[];
  /** Server variables beyond the run's base ones. */
  env?: Record<string, string>;
  /** Once, against the live server, before any load; throws if the function is not ready. */
  setup?(ctx: SetupContext): Promise<void>;
  /** Builds its requests inside a generator process. */
  source(
    p: ScenarioParams,
    target: Target,
    gen: { index: number; of: number },
  ): Promise<RequestSource>;
}

/** Order quota of the rate-limited user, and the window that keeps them over it all run. */
const LIMITED_QUOTA = 5;

const ORDER_BODY = JSON.stringify({
  symbol: "AAPL",
  side: "buy",
  type: "market",
  qty: 1,
  time_in_force: "day",
});

const V1 = "/functions/v1";

/** Every request is this one (already encoded once). */
function constant(target: Target, spec: RequestSpec): RequestSource {
  const bytes = encodeRequest(target, spec);
  return { build: (from, to) => Promise.resolve(new Array(to - from).fill(bytes)) };
}

/** Request `i` is `specs[i % specs.length]`. */
function rotating(target: Target, specs: RequestSpec[]): RequestSource {
  const encoded = specs.map((s) => encodeRequest(target, s));
  return {
    build: (from, to) =>
      Promise.resolve(
        Array.from({ length: to - from }, (_, k) => encoded[(from + k) % encoded.length]),
      ),
  };
}

/** POST broker-order with a key no request ever used (`i` never repeats within a generator). */
function orders(
  p: ScenarioParams,
  target: Target,
  gen: { index: number },
  tokens: string[],
): RequestSource {
  return {
    build: (from, to) =>
      Promise.resolve(Array.from({ length: to - from }, (_, k) => {
        const i = from + k;
        return encodeRequest(target, {
          method: "POST",
          path: `${V1}/broker-order`,
          headers: {
            origin: p.origin,
            authorization: `Bearer ${tokens[i % tokens.length]}`,
            "content-type": "application/json",
            "idempotency-key": `bench-${p.runId}-g${gen.index}-${i}`,
          },
          body: ORDER_BODY,
        });
      })),
  };
}

/**
 * Stripe deliveries of `checkout.session.completed`, signed with the real `stripe` library as
 * Stripe signs them, before the timed run. Every fifth delivery repeats the one 19 places
 * earlier byte for byte (a redelivery: https://docs.stripe.com/webhooks#retries), so 20% are
 * duplicates once the sequence is under way.
 */
async function stripeDeliveries(p: ScenarioParams, target: Target): Promise<RequestSource> {
  const { default: Stripe } = await import("stripe");
  const { checkoutCompleted } = await import(
    "../../tests/functions/payment-webhook/stripe_events.ts"
  );
  const stripe = new Stripe("sk_test_benchmark", { httpClient: Stripe.createFetchHttpClient() });
  const cryptoProvider = Stripe.createSubtleCryptoProvider();
  const recent = new Map<number, Uint8Array>();
  return {
    async build(from, to) {
      const out: Uint8Array[] = [];
      for (let i = from; i < to; i++) {
        const original = i % 5 === 4 ? recent.get(i - 19) : undefined;
        if (original) {
          out.push(original);
          continue;
        }
        const payload = JSON.stringify(
          checkoutCompleted({ userId: p.userIds[i % p.userIds.length] }),
          null,
          2,
        );
        const signature = await stripe.webhooks.generateTestHeaderStringAsync({
          payload,
          secret: p.webhookSecret,
          cryptoProvider,
        });
        const bytes = encodeRequest(target, {
          method: "POST",
          path: `${V1}/payment-webhook`,
          headers: {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": signature,
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
          },
          body: payload,
        });
        out.push(bytes);
        recent.set(i, bytes);
        recent.delete(i - 64);
      }
      return out;
    },
  };
}

/** Posts an order as the given user; the answer's status. */
async function placeOrder(ctx: SetupContext, token: string, key: string): Promise<number> {
  const res = await fetch(`${ctx.url}${V1}/broker-order`, {
    method: "POST",
    headers: {
      origin: ctx.params.origin,
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "idempotency-key": key,
    },
    body: ORDER_BODY,
  });
  await res.body?.cancel();
  return res.status;
}

/** The scenarios, in the order they run (the baseline first: the others are read against it). */
export const SCENARIOS: Scenario[] = [
  {
    name: "baseline",
    title: "bare Deno.serve, JSON 200",
    server: "baseline",
    needs: [],
    usesDatabase: false,
    expect: [200],
    source: (_p, target) => Promise.resolve(constant(target, { method: "GET", path: "/" })),
  },
  {
    name: "preflight",
    title: "CORS preflight to broker-order, allowed origin",
    server: "app",
    needs: ["broker-order"],
    usesDatabase: false,
    baselineShareTarget: 0.5,
    expect: [204],
    source: (p, target) =>
      Promise.resolve(constant(target, {
        method: "OPTIONS",
        path: `${V1}/broker-order`,
        headers: {
          origin: p.origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, idempotency-key",
        },
      })),
  },
  {
    name: "unauthorized",
    title: "broker-order with a forged JWT: 401",
    server: "app",
    needs: ["broker-order"],
    usesDatabase: false,
    baselineShareTarget: 0.5,
    expect: [401],
    source: (p, target) =>
      Promise.resolve(constant(target, {
        method: "GET",
        path: `${V1}/broker-order`,
        headers: { origin: p.origin, authorization: `Bearer ${p.forgedToken}` },
      })),
  },
  {
    name: "status",
    title: "status: one database ping",
    server: "app",
    needs: ["status"],
    usesDatabase: true,
    expect: [200],
    source: (_p, target) =>
      Promise.resolve(constant(target, { method: "GET", path: `${V1}/status` })),
  },
  {
    name: "market-data-cached",
    title: "market-data, 3 cached quotes, many users",
    server: "app",
    needs: ["market-data"],
    // The per-user rate limit is counted in Postgres on every request.
    usesDatabase: true,
    baselineShareTarget: 0.5,
    expect: [200],
    env: { MARKET_DATA_RATE_LIMIT: "1000000" },
    async setup(ctx) {
      // Warm: the first answer comes live from the provider, the next must come from the cache.
      for (let attempt = 0; attempt < 2; attempt++) {
        const res = await fetch(`${ctx.url}${V1}/market-data?symbols=${ctx.params.symbols}`, {
          headers: {
            origin: ctx.params.origin,
            authorization: `Bearer ${ctx.params.userTokens[0]}`,
          },
        });
        const body = await res.json().catch(() => null);
        if (res.status !== 200) throw new Error(`market-data answered ${res.status} while warming`);
        const sources = Object.values(body?.quotes ?? {}).map((q) =>
          (q as { source?: string }).source
        );
        if (attempt === 1 && !sources.every((s) => s === "cache")) {
          throw new Error(`market-data did not serve from its cache after warming: ${sources}`);
        }
      }
    },
    source: (p, target) =>
      Promise.resolve(rotating(
        target,
        p.userTokens.map((token) => ({
          method: "GET",
          path: `${V1}/market-data?symbols=${p.symbols}`,
          headers: { origin: p.origin, authorization: `Bearer ${token}` },
        })),
      )),
  },
  {
    name: "broker-order",
    title: "order placed through the broker simulator, new key each",
    server: "app",
    needs: ["broker-order"],
    usesDatabase: true,
    rpsTarget: 2500,
    expect: [201],
    env: { ORDER_RATE_LIMIT: "1000000" },
    source: (p, target, gen) => Promise.resolve(orders(p, target, gen, p.userTokens)),
  },
  {
    name: "payment-webhook",
    title: "signed Stripe checkout event, 20% duplicates",
    server: "app",
    needs: ["payment-webhook"],
    usesDatabase: true,
    rpsTarget: 2500,
    expect: [200],
    source: (p, target) => stripeDeliveries(p, target),
  },
  {
    name: "rate-limited",
    title: "broker-order from a user over quota: 429",
    server: "app",
    needs: ["broker-order"],
    usesDatabase: false,
    expect: [429],
    // A quota used up in setup and a window longer than any run keep the user over it.
    env: { ORDER_RATE_LIMIT: String(LIMITED_QUOTA), ORDER_RATE_WINDOW_SECONDS: "86400" },
    async setup(ctx) {
      for (let i = 0; i < LIMITED_QUOTA; i++) {
        const status = await placeOrder(
          ctx,
          ctx.params.limitedToken,
          `bench-${ctx.params.runId}-quota-${i}`,
        );
        if (status !== 201) {
          throw new Error(`broker-order answered ${status} to an order within quota`);
        }
      }
      const status = await placeOrder(
        ctx,
        ctx.params.limitedToken,
        `bench-${ctx.params.runId}-over`,
      );
      if (status !== 429) throw new Error(`broker-order answered ${status} to a user over quota`);
    },
    source: (p, target, gen) => Promise.resolve(orders(p, target, gen, [p.limitedToken])),
  },
];

/** For generator processes (load.ts): the named scenario's request source. */
export function requestSource(
  name: string,
  params: ScenarioParams,
  target: Target,
  gen: { index: number; of: number },
): Promise<RequestSource> {
  const scenario = SCENARIOS.find((s) => s.name === name);
  if (!scenario) throw new Error(`No scenario named ${name}`);
  return scenario.source(params, target, gen);
}
