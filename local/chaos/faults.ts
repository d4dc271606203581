/**
 * The nemesis: the fault kinds (each one entry: what it breaks, for how long, how it is healed)
 * and the schedule a seed draws from them. Two faults never hold the same resource at once (a
 * broker that is both "down" and "slow" means nothing), but faults on different resources
 * overlap freely: the bugs worth finding live between them.
 *
 * Adding a fault kind is adding one entry to FAULT_KINDS; `available` switches it off where the
 * branch lacks what it needs (the Stripe API simulator).
 *
 * @example
 * ```ts
 * import { drawSchedule, FAULT_KINDS } from "./faults.ts";
 * import { Rng } from "./prng.ts";
 *
 * const schedule = drawSchedule(new Rng(7).fork("nemesis"), 120, FAULT_KINDS);
 * ```
 */
import type { Rng } from "./prng.ts";
import type { Instance, World } from "./world.ts";

/** One fault of the schedule: when (s from the start), how long, what, where. */
export interface FaultEvent {
  /** Its index in the schedule. */
  n: number;
  kind: string;
  target: string;
  startMs: number;
  durationMs: number;
  /** A kind's own draw (a latency, a delay), in ms. */
  param?: number;
}

/** Undoes a fault. */
export type Heal = () => void | Promise<void>;

export interface FaultKind {
  name: string;
  /** What it may hit ("a", "b" for an instance's link or process; "-" for a shared upstream). */
  targets: readonly string[];
  /** Shortest and longest duration, ms. */
  durationMs: readonly [number, number];
  /** A parameter drawn with the fault (ms), when the kind has one. */
  param?: readonly [number, number];
  /** The resource it holds (two faults never hold one resource at once). */
  resource(target: string): string;
  /** Relative frequency. */
  weight: number;
  /** False where the branch lacks what the fault needs. */
  available?(w: World): boolean;
  inject(w: World, e: FaultEvent): Promise<Heal>;
}

const inst = (w: World, target: string): Instance => w.instances.find((i) => i.name === target)!;
const stripeSim = (w: World) => w.sims.stripe;

/** Every fault the nemesis knows. */
export const FAULT_KINDS: readonly FaultKind[] = [
  {
    name: "db-cut",
    targets: ["a", "b"],
    durationMs: [2_000, 12_000],
    resource: (t) => `db-link:${t}`,
    weight: 3,
    inject: (w, e) => {
      const p = inst(w, e.target).proxy;
      p.cut();
      return Promise.resolve(() => p.heal());
    },
  },
  {
    name: "db-stall",
    targets: ["a", "b"],
    durationMs: [1_000, 6_000],
    resource: (t) => `db-link:${t}`,
    weight: 2,
    inject: (w, e) => {
      const p = inst(w, e.target).proxy;
      p.stall();
      return Promise.resolve(() => p.heal());
    },
  },
  {
    name: "db-latency",
    targets: ["a", "b"],
    durationMs: [3_000, 15_000],
    param: [20, 300],
    resource: (t) => `db-link:${t}`,
    weight: 2,
    inject: (w, e) => {
      const p = inst(w, e.target).proxy;
      p.latency(e.param ?? 50);
      return Promise.resolve(() => p.heal());
    },
  },
  {
    name: "pg-restart",
    targets: ["-"],
    durationMs: [1_000, 6_000],
    resource: () => "postgres",
    weight: 2,
    // A crash (immediate stop: recovery at start), down for the duration, then started again.
    inject: async (w) => {
      await w.cluster.stop("immediate");
      return () => w.cluster.start();
    },
  },
  {
    name: "kill-9",
    targets: ["a", "b"],
    durationMs: [1_000, 8_000],
    resource: (t) => `process:${t}`,
    weight: 2,
    inject: async (w, e) => {
      const i = inst(w, e.target);
      await w.kill(i);
      return () => w.respawn(i);
    },
  },
  {
    name: "broker-5xx",
    targets: ["-"],
    durationMs: [2_000, 10_000],
    resource: () => "broker",
    weight: 2,
    inject: (w) => {
      w.sims.broker.failNext(1e9, 503);
      return Promise.resolve(() => w.sims.broker.failNext(0));
    },
  },
  {
    name: "broker-429",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    resource: () => "broker",
    weight: 1,
    inject: (w) => {
      w.sims.broker.failNext(1e9, 429);
      return Promise.resolve(() => w.sims.broker.failNext(0));
    },
  },
  {
    name: "broker-timeout",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    param: [2_000, 4_000],
    resource: () => "broker",
    weight: 2,
    // Orders are taken at once, their answers come after the function's deadline (1.5 s): the
    // outcome is unknown to the function, which must look the order up, never resubmit it.
    inject: (w, e) => {
      w.sims.broker.delayMs = e.param ?? 3_000;
      w.sims.broker.lookupDelayMs = e.param ?? 3_000;
      return Promise.resolve(() => {
        w.sims.broker.delayMs = 0;
        w.sims.broker.lookupDelayMs = 0;
      });
    },
  },
  {
    name: "broker-slow",
    targets: ["-"],
    durationMs: [2_000, 10_000],
    param: [100, 1_000],
    resource: () => "broker",
    weight: 1,
    inject: (w, e) => {
      w.sims.broker.delayMs = e.param ?? 500;
      return Promise.resolve(() => {
        w.sims.broker.delayMs = 0;
      });
    },
  },
  {
    name: "discord-5xx",
    targets: ["-"],
    durationMs: [3_000, 15_000],
    resource: () => "discord",
    weight: 3,
    inject: (w) => {
      w.sims.discord.down = true;
      return Promise.resolve(() => {
        w.sims.discord.down = false;
      });
    },
  },
  {
    name: "discord-429",
    targets: ["-"],
    durationMs: [2_000, 10_000],
    resource: () => "discord",
    weight: 2,
    // A global rate limit for the duration (`retry_after` says how long, as Discord does).
    inject: (w, e) => {
      w.sims.discord.rateLimitGlobally(e.durationMs);
      return Promise.resolve(() => {});
    },
  },
  {
    name: "discord-404",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    resource: () => "discord",
    weight: 1,
    // The webhook answers Unknown Webhook (deleted), then comes back (recreated at the same URL).
    inject: (w) => {
      w.sims.discord.deleted = true;
      return Promise.resolve(() => {
        w.sims.discord.deleted = false;
      });
    },
  },
  {
    name: "discord-timeout",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    param: [2_000, 4_000],
    resource: () => "discord",
    weight: 1,
    // Discord posts the message but answers after the deadline (1.5 s): the send's outcome is
    // unknown, and Discord's webhooks take no idempotency key (`nonce`/`enforce_nonce` exist
    // for bot messages only), so a re-send may double it. The invariants count such doubles
    // apart, as indeterminate, rather than as failures.
    inject: (w, e) => {
      w.sims.discord.delayMs = e.param ?? 3_000;
      return Promise.resolve(() => {
        w.sims.discord.delayMs = 0;
      });
    },
  },
  {
    name: "discord-slow",
    targets: ["-"],
    durationMs: [2_000, 10_000],
    // Slower than usual, within the deadline (DISCORD_TIMEOUT_MS is 1.5 s in the run).
    param: [200, 1_200],
    resource: () => "discord",
    weight: 1,
    inject: (w, e) => {
      w.sims.discord.delayMs = e.param ?? 1_000;
      return Promise.resolve(() => {
        w.sims.discord.delayMs = 0;
      });
    },
  },
  {
    name: "quotes-5xx",
    targets: ["-"],
    durationMs: [2_000, 10_000],
    resource: () => "quotes",
    weight: 2,
    inject: (w) => {
      w.sims.quotes.down = true;
      return Promise.resolve(() => {
        w.sims.quotes.down = false;
      });
    },
  },
  {
    name: "quotes-429",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    resource: () => "quotes",
    weight: 1,
    // The simulator's 429 is one-shot: re-armed every 50 ms for the duration.
    inject: (w) => {
      w.sims.quotes.rateLimitNext(2);
      const timer = setInterval(() => w.sims.quotes.rateLimitNext(2), 50);
      return Promise.resolve(() => {
        clearInterval(timer);
        w.sims.quotes.failNext(0);
      });
    },
  },
  {
    name: "stripe-api-down",
    targets: ["-"],
    durationMs: [3_000, 15_000],
    resource: () => "stripe",
    weight: 2,
    available: (w) => w.features.stripeSim,
    inject: (w) => {
      const sim = stripeSim(w)!;
      sim.down = true;
      return Promise.resolve(() => {
        sim.down = false;
      });
    },
  },
  {
    name: "clients-slow",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    resource: () => "clients-slow",
    weight: 1,
    inject: (w) => {
      w.clientMode.slow = true;
      return Promise.resolve(() => {
        w.clientMode.slow = false;
      });
    },
  },
  {
    name: "clients-abort",
    targets: ["-"],
    durationMs: [2_000, 8_000],
    resource: () => "clients-abort",
    weight: 1,
    inject: (w) => {
      w.clientMode.abort = true;
      return Promise.resolve(() => {
        w.clientMode.abort = false;
      });
    },
  },
  {
    name: "clients-stall-body",
    targets: ["-"],
    durationMs: [2_000, 6_000],
    resource: () => "clients-stall-body",
    weight: 1,
    inject: (w) => {
      w.clientMode.stallBody = true;
      return Promise.resolve(() => {
        w.clientMode.stallBody = false;
      });
    },
  },
];

/**
 * The schedule a seed draws: about one fault every `spacingMs` of the run, starting after a
 * warm-up and ending before its last seconds, overlapping on different resources only.
 * Kinds are filtered before drawing, so the same kinds and seed give the same schedule.
 */
export function drawSchedule(
  rng: Rng,
  seconds: number,
  kinds: readonly FaultKind[],
  opts: { warmupMs?: number; spacingMs?: number } = {},
): FaultEvent[] {
  const warmup = opts.warmupMs ?? 5_000;
  const endMs = seconds * 1000 - 3_000;
  const count = Math.max(1, Math.round((endMs - warmup) / (opts.spacingMs ?? 6_000)));
  const events: FaultEvent[] = [];
  const busy = new Map<string, [number, number][]>();
  for (let tries = 0; events.length < count && tries < count * 20; tries++) {
    const kind = rng.weighted(kinds.map((k) => [k, k.weight] as const));
    const target = rng.pick(kind.targets);
    const [lo, hi] = kind.durationMs;
    const durationMs = rng.int(lo, hi);
    const latest = endMs - durationMs;
    if (latest <= warmup) continue;
    const startMs = rng.int(warmup, latest);
    const param = kind.param ? rng.int(kind.param[0], kind.param[1]) : undefined;
    const resource = kind.resource(target);
    const spans = busy.get(resource) ?? [];
    // One second apart at least on the same resource, so each fault's end is seen.
    if (spans.some(([s, e]) => startMs < e + 1_000 && s < startMs + durationMs + 1_000)) continue;
    spans.push([startMs, startMs + durationMs]);
    busy.set(resource, spans);
    events.push({ n: 0, kind: kind.name, target, startMs, durationMs, param });
  }
  events.sort((a, b) => a.startMs - b.startMs);
  events.forEach((e, i) => e.n = i);
  return events;
}

/** One line per fault, for the log and the report. */
export function describe(e: FaultEvent): string {
  const s = (ms: number) => (ms / 1000).toFixed(1);
  return `#${e.n} ${s(e.startMs)}s-${s(e.startMs + e.durationMs)}s ${e.kind}${
    e.target === "-" ? "" : ` on ${e.target}`
  }${e.param === undefined ? "" : ` (${e.param} ms)`}`;
}
