/**
 * The accounting at the end of a chaos run (Jepsen style): each invariant reads the history,
 * the ledger, the database and the simulators, and says how many things it checked and which
 * failed. An invariant that needs a route this branch lacks says `pending` and what would switch
 * it on, rather than passing without checking.
 *
 * Adding an invariant is adding one entry to INVARIANTS.
 */
import type { Ledger } from "./load.ts";
import { acked, EXPECTED } from "./load.ts";
import type { FaultEvent } from "./faults.ts";
import type { World } from "./world.ts";

/** How long after a fault's end the service must answer again (the contract's 5 s). */
export const RECOVERY_LIMIT_MS = 5_000;

/** A fault's end and how long until status and quotes answered 200 again. */
export interface Recovery {
  fault: number;
  kind: string;
  /** ms from the heal to the first all-200 probe; null: not back within the probe's bound. */
  ms: number | null;
  /** Measured together with later faults (others were active at its end). */
  overlapped?: boolean;
}

/** What the invariants read, gathered once after the run settled. */
export interface Facts {
  w: World;
  ledger: Ledger;
  schedule: FaultEvent[];
  recoveries: Recovery[];
  orders: { client_order_id: string; status: string; broker_order_id: string | null }[];
  purchases: { user_id: string; n: number }[];
  stripeEvents: Set<string>;
  subscriptions: Map<string, string>;
  alerts: {
    id: string;
    state: string;
    last_error: string | null;
    discord_message_id: string | null;
    repeat_of: string | null;
  }[];
  /** The operator status body (service key), after the run. */
  status: Record<string, unknown> | null;
  /** Instances' kill times, for telling a hang from a dropped connection. */
  kills: { inst: string; t: number }[];
}

export interface Outcome {
  name: string;
  result: "pass" | "fail" | "pending";
  checked: number;
  failures: string[];
  note?: string;
}

export interface Invariant {
  name: string;
  /** Why it is pending on this branch (undefined: it runs). */
  pending?(f: Facts): string | undefined;
  check(f: Facts): { checked: number; failures: string[]; note?: string };
}

const MAX_LISTED = 20;

/** Every invariant of issue 26. */
export const INVARIANTS: readonly Invariant[] = [
  {
    name: "no 500 (no 5xx other than 503) ever",
    check: ({ w }) => {
      const bad = w.history.filter((o) => o.status >= 500 && o.status !== 503);
      return {
        checked: w.history.filter((o) => o.status > 0).length,
        failures: bad.map((o) => `${o.op} at ${o.t} ms on ${o.inst}: ${o.status} ${o.code ?? ""}`),
      };
    },
  },
  {
    name: "every 503 and 429 carries Retry-After",
    check: ({ w }) => {
      const limited = w.history.filter((o) => o.status === 503 || o.status === 429);
      return {
        checked: limited.length,
        failures: limited.filter((o) => !/^\d+$/.test(o.retryAfter ?? "")).map((o) =>
          `${o.op} at ${o.t} ms on ${o.inst}: ${o.status} ${
            o.code ?? ""
          } Retry-After ${o.retryAfter}`
        ),
      };
    },
  },
  {
    name: "every answer is one its route may give",
    check: ({ w }) => {
      const answered = w.history.filter((o) =>
        o.status > 0 && EXPECTED[o.op] && o.mode !== "stalled-body"
      );
      return {
        checked: answered.length,
        failures: answered.filter((o) => !EXPECTED[o.op].includes(o.status)).map((o) =>
          `${o.op} at ${o.t} ms on ${o.inst}: ${o.status} ${o.code ?? ""}${
            o.mode ? ` (${o.mode} client)` : ""
          }`
        ),
      };
    },
  },
  {
    name: "no request hangs past 15 s on a live instance",
    check: ({ w, kills }) => {
      const hung = w.history.filter((o) =>
        o.error === "timeout" &&
        !kills.some((k) => k.inst === o.inst && k.t >= o.t && k.t <= o.t + o.ms)
      );
      return {
        checked: w.history.length,
        failures: hung.map((o) => `${o.op} at ${o.t} ms on ${o.inst}`),
      };
    },
  },
  {
    name: "a body that stalls is answered 408 (or its connection closed), never left hanging",
    check: ({ w }) => {
      const stalled = w.history.filter((o) => o.mode === "stalled-body");
      return {
        checked: stalled.length,
        failures: stalled.filter((o) =>
          o.error === "timeout" || (o.status !== 0 && o.status !== 408)
        ).map((o) => `${o.op} at ${o.t} ms on ${o.inst}: ${o.status || o.error} after ${o.ms} ms`),
      };
    },
  },
  {
    name: "every webhook answered 2xx (after Stripe-style redelivery)",
    check: ({ ledger }) => {
      const delivered = [...ledger.events.values()].filter((e) => !e.withheld);
      return {
        checked: delivered.length,
        failures: delivered.filter((e) => !acked(e)).map((e) =>
          `${e.event.id} (${e.event.type}): ${e.answers.join(",")}`
        ),
      };
    },
  },
  {
    name: "every delivered event applied exactly once",
    check: ({ ledger, purchases, stripeEvents }) => {
      const failures: string[] = [];
      const byUser = new Map(purchases.map((p) => [p.user_id, p.n]));
      let checked = 0;
      for (const e of ledger.events.values()) {
        if (e.withheld || !acked(e)) continue;
        checked++;
        if (!stripeEvents.has(e.event.id)) {
          failures.push(`${e.event.id} acknowledged, not recorded`);
        }
        if (e.event.type === "checkout.session.completed" && byUser.get(e.userId) !== 1) {
          failures.push(`${e.event.id}: ${byUser.get(e.userId) ?? 0} purchases for its user`);
        }
      }
      return { checked, failures };
    },
  },
  {
    name: "an older event never overwrites a newer one (subscriptions)",
    check: ({ ledger, subscriptions }) => {
      const newest = new Map<string, { created: number; status: string }>();
      for (const e of ledger.events.values()) {
        if (!e.subscription || !acked(e)) continue;
        const cur = newest.get(e.subscription);
        if (!cur || e.event.created > cur.created) {
          newest.set(e.subscription, { created: e.event.created, status: e.status! });
        }
      }
      const failures: string[] = [];
      for (const [sub, { status }] of newest) {
        if (subscriptions.get(sub) !== status) {
          failures.push(`${sub}: stored ${subscriptions.get(sub)}, newest event says ${status}`);
        }
      }
      return { checked: newest.size, failures };
    },
  },
  {
    name: "every event never delivered applied exactly once (after the catch-up)",
    pending: ({ w }) =>
      !w.features.catchUp || !w.features.stripeSim
        ? "needs POST /payment-webhook/catch-up and the Stripe API simulator (sims.stripe)"
        : undefined,
    check: ({ ledger, purchases, stripeEvents }) => {
      const byUser = new Map(purchases.map((p) => [p.user_id, p.n]));
      const withheld = [...ledger.events.values()].filter((e) => e.withheld);
      return {
        checked: withheld.length,
        failures: withheld.filter((e) =>
          !stripeEvents.has(e.event.id) || byUser.get(e.userId) !== 1
        ).map((e) =>
          `${e.event.id}: recorded ${stripeEvents.has(e.event.id)}, purchases ${
            byUser.get(e.userId) ?? 0
          }`
        ),
      };
    },
  },
  {
    name: "no client_order_id twice at the broker",
    check: ({ w }) => {
      const seen = new Map<string, number>();
      for (const o of w.sims.broker.orders) {
        seen.set(o.client_order_id, (seen.get(o.client_order_id) ?? 0) + 1);
      }
      return {
        checked: seen.size,
        failures: [...seen].filter(([, n]) => n > 1).map(([id, n]) => `${id}: ${n} times`),
      };
    },
  },
  {
    name: "every 201/202 answered is accounted for (one local order, the same every time)",
    check: ({ ledger, orders }) => {
      const local = new Map<string, number>();
      for (const o of orders) local.set(o.client_order_id, (local.get(o.client_order_id) ?? 0) + 1);
      const failures: string[] = [];
      let checked = 0;
      for (const o of ledger.orders.values()) {
        if (!o.answers.some((s) => s === 201 || s === 202)) continue;
        checked++;
        if (o.ids.size !== 1) failures.push(`${o.key}: ${o.ids.size} different order ids answered`);
        if (!o.clientOrderId || local.get(o.clientOrderId) !== 1) {
          failures.push(`${o.key}: ${local.get(o.clientOrderId ?? "") ?? 0} local rows`);
        }
      }
      return { checked, failures };
    },
  },
  {
    name: "every order the broker has exists once locally",
    check: ({ w, orders }) => {
      const local = new Map<string, number>();
      for (const o of orders) local.set(o.client_order_id, (local.get(o.client_order_id) ?? 0) + 1);
      const broker = w.sims.broker.orders;
      return {
        checked: broker.length,
        failures: broker.filter((o) => local.get(o.client_order_id) !== 1).map((o) =>
          `${o.client_order_id}: ${local.get(o.client_order_id) ?? 0} local rows`
        ),
      };
    },
  },
  {
    name: "no order left pending_confirmation once the broker is back",
    check: ({ orders }) => ({
      checked: orders.length,
      failures: orders.filter((o) => o.status === "pending_confirmation").map((o) =>
        `${o.client_order_id} still pending_confirmation`
      ),
    }),
  },
  {
    name: "every local order has the broker's final state (after the sync)",
    pending: ({ w }) =>
      w.features.orderSync ? undefined : "needs POST /broker-order/sync (order lifecycle)",
    check: ({ w, orders }) => {
      const broker = new Map(w.sims.broker.orders.map((o) => [o.client_order_id, o]));
      const failures: string[] = [];
      for (const o of orders) {
        const b = broker.get(o.client_order_id);
        if (!b) continue;
        if (b.status !== o.status || b.id !== o.broker_order_id) {
          failures.push(`${o.client_order_id}: local ${o.status}, broker ${b.status}`);
        }
      }
      return { checked: orders.length, failures };
    },
  },
  {
    name:
      "every alert answered 202 delivered exactly once, or dead-lettered with its reason in status",
    check: ({ w, ledger, alerts, status }) => {
      const rows = new Map(alerts.map((a) => [a.id, a]));
      const messages = new Set(w.sims.discord.messages.map((m) => m.id));
      const statusText = JSON.stringify(status ?? {});
      const failures: string[] = [];
      const answered = ledger.alerts.filter((a) => a.status === 202);
      for (const a of answered) {
        const row = a.id ? rows.get(a.id) : undefined;
        if (!row) {
          failures.push(`a${a.n} (${a.severity}): answered 202, no row ${a.id}`);
        } else if (row.state === "queued") {
          failures.push(`a${a.n} (${a.severity}): still queued after the drains (stranded)`);
        } else if (row.state === "sent" && !messages.has(row.discord_message_id ?? "")) {
          failures.push(`a${a.n}: marked sent as ${row.discord_message_id}, not at Discord`);
        } else if (row.state === "dead" && (!row.last_error || !statusText.includes("dead"))) {
          failures.push(`a${a.n}: dead without a reason in status`);
        }
      }
      return { checked: answered.length, failures };
    },
  },
  {
    name: "no alert message twice at Discord (each message is one sent row)",
    check: ({ w, alerts }) => {
      const byMessage = new Map<string, number>();
      for (const a of alerts) {
        if (a.discord_message_id) {
          byMessage.set(a.discord_message_id, (byMessage.get(a.discord_message_id) ?? 0) + 1);
        }
      }
      // A message no row claims is a row sent twice (or sent and not recorded).
      const failures: string[] = [];
      const excused: string[] = [];
      // Indeterminate: a message that reached Discord while it answered after the deadline
      // (a discord-timeout window, plus its delay) may have been re-sent; such doubles are
      // counted apart. Any other double is a failure.
      const ambiguous = (at: number) =>
        w.windows.some((x) =>
          x.kind === "discord-timeout" && at >= x.from && at <= x.to + (x.param ?? 0) + 1_000
        );
      // The run's own alerts carry a unique title ("chaos <seed> a<n>"): its first message
      // (not a "more times since the last message" follow-up) is at Discord at most once.
      const marker = new RegExp(`chaos ${w.seed} a\\d+`);
      const firsts = new Map<string, { n: number; ambiguous: boolean }>();
      for (const m of w.sims.discord.messages) {
        if (!byMessage.has(m.id)) {
          const line = `message ${m.id} claimed by no row: ${m.content.split("\n")[0]}`;
          (ambiguous(m.receivedAt) ? excused : failures).push(line);
        }
        const title = marker.exec(m.content)?.[0];
        if (title && !m.content.includes("since the last message")) {
          const seen = firsts.get(title) ?? { n: 0, ambiguous: false };
          firsts.set(title, {
            n: seen.n + 1,
            ambiguous: seen.ambiguous || ambiguous(m.receivedAt),
          });
        }
      }
      for (const [title, { n, ambiguous }] of firsts) {
        if (n > 1) (ambiguous ? excused : failures).push(`"${title}" delivered ${n} times`);
      }
      if (excused.length) {
        return {
          checked: w.sims.discord.messages.length,
          failures,
          note:
            `${excused.length} indeterminate (sent while Discord answered after the deadline): ${
              excused.slice(0, 3).join("; ")
            }`,
        };
      }
      return { checked: w.sims.discord.messages.length, failures };
    },
  },
  {
    name: "Discord's bucket never overrun (no 429 but the global ones the nemesis ordered)",
    check: ({ w }) => {
      // Direct operator alerts (shared/operator_alerts.ts) skip the fleet's shared bucket by
      // design while the database that holds it is down: a 429 during a database fault (or
      // within 3 s of its end) is counted apart; any other is an overspent bucket.
      const dbDown = (at: number) =>
        w.windows.filter((x) =>
          ["pg-restart", "db-cut", "db-stall"].includes(x.kind) && at >= x.from &&
          at <= x.to + 3_000
        );
      const during = (at: number) =>
        w.windows.filter((x) => at >= x.from && at <= x.to + 200).map((x) => x.kind);
      const line = (at: number) =>
        `429 at ${new Date(at).toISOString().slice(11, 23)} during ${
          during(at).join("+") || "no fault"
        }`;
      // And right after Discord answered late (a discord-timeout window plus its delay): a
      // request the client abandoned is still counted by Discord when it is processed, in a
      // later window than the one the fleet's shared bucket charged it to; nobody can know.
      const lateAnswers = (at: number) =>
        w.windows.some((x) =>
          x.kind === "discord-timeout" && at >= x.from && at <= x.to + (x.param ?? 0) + 2_000
        );
      // And during or shortly after any fault: a fault opens a breaker (or takes the database
      // away), and the platform then tells operators directly, outside the shared bucket, by
      // design; a breaker opens only after failures within its window, so up to 10 s late.
      const directAlerts = (at: number) =>
        w.windows.some((x) => at >= x.from && at <= x.to + 10_000);
      const apart = (at: number) => dbDown(at).length > 0 || lateAnswers(at) || directAlerts(at);
      const excused = w.bucket429At.filter(apart);
      const failures = w.bucket429At.filter((at) => !apart(at)).map(line);
      // Sampled every 100 ms: a 429 after the last sample has no time to judge it by; it is
      // counted in the note (the settling drains after the faults, when the fleet's bucket is
      // learnt again), not as a failure.
      const unsampled = Math.max(0, w.sims.discord.bucketRateLimited - w.bucket429At.length);
      const notes = [
        ...(excused.length
          ? [
            `${excused.length} during or just after a fault (direct operator alerts skip the ` +
            `shared bucket by design) or after Discord answered late: ${
              excused.slice(0, 3).map(line).join("; ")
            }`,
          ]
          : []),
        ...(unsampled ? [`${unsampled} after the last sample (not timed)`] : []),
      ];
      return {
        checked: w.sims.discord.requests,
        failures,
        ...(notes.length ? { note: notes.join("; ") } : {}),
      };
    },
  },
  {
    name: "quotes are the provider's, never made up",
    check: ({ w, ledger }) => ({
      checked: w.history.filter((o) => o.op === "quotes" && o.status === 200).length,
      failures: ledger.badQuotes,
    }),
  },
  {
    name: `service resumes within ${RECOVERY_LIMIT_MS / 1000} s of each fault's end`,
    check: ({ recoveries }) => {
      const measured = recoveries.filter((r) => !r.overlapped);
      return {
        checked: measured.length,
        failures: measured.filter((r) => r.ms === null || r.ms > RECOVERY_LIMIT_MS).map((r) =>
          `fault #${r.fault} ${r.kind}: ${r.ms === null ? "not back" : `back after ${r.ms} ms`}`
        ),
      };
    },
  },
  {
    name: "memory of each instance flat",
    check: ({ w }) => {
      const failures: string[] = [];
      let checked = 0;
      for (const inst of w.instances) {
        for (const [life, series] of inst.rss.entries()) {
          // The first 10 s are boot and warm-up; compare the first and last quarters of the rest.
          const rest = series.filter(([t]) => t - (series[0]?.[0] ?? 0) > 10_000);
          if (rest.length < 20) continue;
          checked++;
          const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
          const q = Math.floor(rest.length / 4);
          const first = median(rest.slice(0, q).map(([, r]) => r));
          const last = median(rest.slice(-q).map(([, r]) => r));
          const mb = (b: number) => Math.round(b / 1048576);
          if (last > first * 1.5 && last - first > 48 * 1048576) {
            failures.push(`${inst.name} (life ${life + 1}): ${mb(first)} MB → ${mb(last)} MB`);
          }
        }
      }
      return { checked, failures };
    },
  },
];

/** Runs every invariant over the facts. */
export function account(f: Facts): Outcome[] {
  return INVARIANTS.map((inv) => {
    const pending = inv.pending?.(f);
    if (pending) {
      return { name: inv.name, result: "pending", checked: 0, failures: [], note: pending };
    }
    const { checked, failures, note } = inv.check(f);
    return {
      name: inv.name,
      result: failures.length ? "fail" : "pass",
      checked,
      ...(note ? { note } : {}),
      failures: failures.slice(0, MAX_LISTED).concat(
        failures.length > MAX_LISTED ? [`… and ${failures.length - MAX_LISTED} more`] : [],
      ),
    };
  });
}
