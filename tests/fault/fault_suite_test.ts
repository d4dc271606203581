/**
 * Fault suite: two server processes over one Postgres under steady mixed traffic (orders,
 * Stripe webhooks, quotes, status), while the network between them and Postgres or the broker
 * is cut, stalled and slowed, and one process is killed. What must hold: no 500 ever, only 503s
 * with Retry-After; nothing lost, nothing doubled; service back within 5 s; no request outlives
 * its deadline.
 */
import { assert, assertEquals, assertLess } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { onServer, SERVER_URL } from "../support/db.ts";
import { type FaultProxy, startFaultProxy } from "../support/fault_proxy.ts";
import type { SpawnedServer } from "../support/server.ts";
import { type Stack, startStack } from "../support/stack.ts";
import { checkoutCompleted, delivery } from "../functions/payment-webhook/stripe_events.ts";

/** Every answer seen, by phase, for the assertions at the end. */
interface Seen {
  phase: string;
  route: string;
  status: number;
  retryAfter: string | null;
  ms: number;
}

/** Deadlines the servers run with in this suite (ms). */
const DB_DEADLINE = 1000;
const BROKER_DEADLINE = 1500;
/** Slack for scheduling on a loaded 2-core machine on top of a deadline. */
const SLACK = 1500;

class Traffic {
  readonly seen: Seen[] = [];
  phase = "warm";
  /** Webhook events not yet acknowledged with 200, to redeliver. */
  readonly undelivered = new Map<string, { event: unknown; userId: string }>();
  readonly delivered = new Map<string, { event: unknown; userId: string }>();
  /** Idempotency keys whose order is not final yet (→ retried with the same key and body). */
  readonly openOrders = new Map<string, { user: string; body: string }>();
  readonly finalOrders = new Map<string, number>();
  #stop = false;
  #loops: Promise<void>[] = [];

  constructor(
    readonly stack: Stack,
    readonly servers: () => SpawnedServer[],
    readonly token: string,
  ) {}

  async #call(route: string, path: string, init: RequestInit = {}): Promise<Response | null> {
    const alive = this.servers();
    const server = alive[Math.floor(Math.random() * alive.length)];
    const started = performance.now();
    try {
      const res = await fetch(`${server.url}/functions/v1/${path}`, {
        ...init,
        signal: AbortSignal.timeout(15_000),
      });
      await res.clone().arrayBuffer();
      this.seen.push({
        phase: this.phase,
        route,
        status: res.status,
        retryAfter: res.headers.get("retry-after"),
        ms: performance.now() - started,
      });
      return res;
    } catch {
      // A killed process drops its connections: the client retries elsewhere.
      this.seen.push({
        phase: this.phase,
        route,
        status: 0,
        retryAfter: null,
        ms: performance.now() - started,
      });
      return null;
    }
  }

  async webhook(id?: string) {
    const entry = id ? this.undelivered.get(id)! : (() => {
      const userId = crypto.randomUUID();
      const event = checkoutCompleted({ userId }) as { id: string };
      this.undelivered.set(event.id, { event, userId });
      return { event, userId };
    })();
    const eventId = (entry.event as { id: string }).id;
    const res = await this.#call(
      "webhook",
      "payment-webhook",
      await delivery(entry.event, SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET),
    );
    if (res?.status === 200) {
      this.undelivered.delete(eventId);
      this.delivered.set(eventId, entry);
    }
  }

  async order(key?: string) {
    const entry = key ? this.openOrders.get(key)! : {
      user: this.token,
      body: JSON.stringify({
        symbol: "MSFT",
        side: "buy",
        type: "market",
        qty: "1",
        time_in_force: "day",
      }),
    };
    key ??= `fault-${crypto.randomUUID()}`;
    this.openOrders.set(key, entry);
    const res = await this.#call("order", "broker-order", {
      method: "POST",
      headers: {
        authorization: `Bearer ${entry.user}`,
        "idempotency-key": key,
        "content-type": "application/json",
      },
      body: entry.body,
    });
    if (res && (res.status === 201 || res.status === 422)) {
      this.openOrders.delete(key);
      this.finalOrders.set(key, res.status);
    }
  }

  start(concurrency = 4) {
    for (let i = 0; i < concurrency; i++) {
      this.#loops.push((async () => {
        while (!this.#stop) {
          const pick = Math.random();
          if (pick < 0.35) await this.webhook();
          else if (pick < 0.7) await this.order();
          else if (pick < 0.85) await this.#call("status", "status");
          else {
            await this.#call("quotes", "market-data?symbols=AAPL,MSFT", {
              headers: { authorization: `Bearer ${this.token}` },
            });
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })());
    }
  }

  async stop() {
    this.#stop = true;
    await Promise.all(this.#loops);
    this.#loops = [];
    this.#stop = false;
  }

  /** Redelivers and retries until everything is final (bounded). */
  async settle(deadlineMs = 30_000) {
    const started = performance.now();
    while (this.undelivered.size || this.openOrders.size) {
      assertLess(
        performance.now() - started,
        deadlineMs,
        `unsettled: ${this.undelivered.size} webhooks, ${this.openOrders.size} orders`,
      );
      for (const id of [...this.undelivered.keys()]) await this.webhook(id);
      for (const key of [...this.openOrders.keys()]) await this.order(key);
      if (this.undelivered.size || this.openOrders.size) {
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  of(phase: string) {
    return this.seen.filter((s) => s.phase === phase);
  }
}

let operatorToken = "";

/** Polls until every server's status is 200; returns how long it took. */
async function untilHealthy(servers: SpawnedServer[], limitMs: number): Promise<number> {
  const started = performance.now();
  for (const s of servers) {
    while (true) {
      const res = await s.call("status").catch(() => null);
      const ok = res?.status === 200;
      await res?.body?.cancel();
      if (ok) break;
      if (performance.now() - started > limitMs) {
        const detail = await s.call("status", {
          headers: { authorization: `Bearer ${operatorToken}` },
        })
          .then((r) => r.text(), (e) => String(e));
        throw new Error(`service should be back within ${limitMs} ms; status says ${detail}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return performance.now() - started;
}

function assertOnlyFailSafe(seen: Seen[], phase: string) {
  const fiveHundreds = seen.filter((s) => s.status >= 500);
  for (const s of fiveHundreds) {
    assertEquals(s.status, 503, `${phase}: ${s.route} answered ${s.status}`);
    assert(Number(s.retryAfter) >= 1, `${phase}: a 503 from ${s.route} without Retry-After`);
  }
  const unexpected = seen.filter((s) =>
    s.status !== 0 && s.status >= 400 && s.status < 500 && s.status !== 409 && s.status !== 429
  );
  assertEquals(unexpected.map((s) => `${s.route}:${s.status}`), [], `${phase}: unexpected 4xx`);
}

/** Exactly one effect per event and per order; nothing half-written. */
async function assertExactlyOnce(stack: Stack, traffic: Traffic) {
  const purchases = await stack.sql<{ user_id: string; n: number }[]>`
    select user_id::text, count(*)::int as n from purchases group by user_id`;
  const byUser = new Map(purchases.map((p) => [p.user_id, p.n]));
  for (const { userId } of traffic.delivered.values()) {
    assertEquals(byUser.get(userId), 1, `the purchase of ${userId} should exist exactly once`);
  }
  assertEquals(purchases.length, traffic.delivered.size, "no purchase without its delivered event");
  const [{ n: events }] = await stack.sql`select count(*)::int as n from internal.stripe_events`;
  assertEquals(events, traffic.delivered.size);

  const placed = new Map<string, number>();
  for (const o of stack.sims.broker.orders) {
    placed.set(o.client_order_id, (placed.get(o.client_order_id) ?? 0) + 1);
  }
  for (const [clientOrderId, n] of placed) {
    assertEquals(n, 1, `broker order ${clientOrderId} placed ${n} times`);
  }
  const [{ n: orders }] = await stack.sql`select count(*)::int as n from orders`;
  const created = [...traffic.finalOrders.values()].filter((s) => s === 201).length;
  assertEquals(orders, created, "one order row per created order");
  assertEquals(stack.sims.broker.placed, created, "one broker order per created order, never two");
}

Deno.test({
  name:
    "fault suite: database cut, stalled and slowed, broker slowed and stalled, a process killed — nothing lost or doubled",
  ...onServer,
  async fn() {
    const server = new URL(SERVER_URL!);
    const dbProxy: FaultProxy = await startFaultProxy({
      hostname: server.hostname,
      port: Number(server.port || 5432),
    });
    let brokerProxy: FaultProxy | undefined;
    const stack = await startStack({
      processes: 2,
      dbUrlFor: (url) => dbProxy.url(url),
      env: {
        DB_QUERY_TIMEOUT_MS: String(DB_DEADLINE),
        BROKER_TIMEOUT_MS: String(BROKER_DEADLINE),
        ORDER_RATE_LIMIT: "100000",
        MARKET_DATA_RATE_LIMIT: "100000",
        IDEMPOTENCY_LOCK_SECONDS: "3",
      },
      wrapEnv: async (env) => {
        const broker = new URL(env.BROKER_API_URL);
        brokerProxy = await startFaultProxy({
          hostname: broker.hostname,
          port: Number(broker.port),
        });
        return { ...env, BROKER_API_URL: brokerProxy.url(env.BROKER_API_URL).replace(/\/$/, "") };
      },
    });
    let alive = [...stack.processes];
    operatorToken = await stack.serviceToken();
    const traffic = new Traffic(stack, () => alive, await stack.userToken());
    try {
      traffic.start();
      await new Promise((r) => setTimeout(r, 1500));
      assert(traffic.of("warm").some((s) => s.status === 201), "orders flow before the faults");

      // 1. The database is cut for 10 s.
      traffic.phase = "cut";
      dbProxy.cut();
      await new Promise((r) => setTimeout(r, 10_000));
      traffic.phase = "recovering";
      dbProxy.heal();
      const backIn = await untilHealthy(alive, 5_000);
      const cut = traffic.of("cut");
      assert(cut.length > 20, "traffic kept flowing during the cut");
      assert(cut.some((s) => s.status === 503), "the cut was felt as 503s");
      for (const s of cut) {
        assertLess(s.ms, 2_000 + SLACK, `a ${s.route} request hung ${s.ms} ms during the cut`);
      }
      assertOnlyFailSafe(cut, "cut");

      // 2. The database slowed, then stalled: every request still ends within its deadline.
      traffic.phase = "db-slow";
      dbProxy.slow(150);
      await new Promise((r) => setTimeout(r, 3_000));
      traffic.phase = "db-stall";
      dbProxy.stall();
      await new Promise((r) => setTimeout(r, 2_000));
      dbProxy.heal();
      traffic.phase = "recovering";
      await untilHealthy(alive, 5_000);
      for (const phase of ["db-slow", "db-stall"]) {
        for (const s of traffic.of(phase)) {
          assertLess(s.ms, DB_DEADLINE * 2 + SLACK, `${phase}: ${s.route} took ${s.ms} ms`);
        }
        assertOnlyFailSafe(traffic.of(phase), phase);
      }

      // 3. The broker slowed past its deadline, then stalled: orders end as 202/503, never doubled.
      traffic.phase = "broker-slow";
      brokerProxy!.stall();
      await new Promise((r) => setTimeout(r, 3_000));
      brokerProxy!.heal();
      traffic.phase = "recovering";
      for (const s of traffic.of("broker-slow")) {
        assertLess(
          s.ms,
          BROKER_DEADLINE * 2 + DB_DEADLINE + SLACK,
          `broker-slow: ${s.route} took ${s.ms} ms`,
        );
      }
      assertOnlyFailSafe(traffic.of("broker-slow"), "broker-slow");

      // 4. One process is killed mid-traffic; clients retry on the other.
      traffic.phase = "kill";
      await new Promise((r) => setTimeout(r, 500));
      const victim = alive[0];
      alive = [alive[1]];
      await victim.stop("SIGKILL");
      await new Promise((r) => setTimeout(r, 1_500));
      await traffic.stop();
      assertOnlyFailSafe(traffic.of("kill"), "kill");

      // Everything that was refused is redelivered or retried, and takes effect once.
      traffic.phase = "settle";
      await untilHealthy(alive, 5_000);
      await traffic.settle();
      // Redeliver every event once more: all duplicates.
      for (const id of [...traffic.delivered.keys()].slice(0, 50)) {
        const { event } = traffic.delivered.get(id)!;
        const res = await alive[0].call(
          "payment-webhook",
          await delivery(event, SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET),
        );
        assertEquals(res.status, 200);
        assertEquals((await res.json()).duplicate, true);
      }
      assertOnlyFailSafe(traffic.of("settle"), "settle");
      assertOnlyFailSafe(traffic.of("recovering"), "recovering");
      await assertExactlyOnce(stack, traffic);
      assert(
        traffic.delivered.size > 10 && traffic.finalOrders.size > 10,
        "enough traffic to mean something",
      );
      const fiveHundred = traffic.seen.filter((s) => s.status === 500);
      assertEquals(fiveHundred.length, 0);
      console.log(
        `fault suite: ${traffic.seen.length} requests, ${traffic.delivered.size} events, ${traffic.finalOrders.size} orders, back ${
          Math.round(backIn)
        } ms after the cut`,
      );
    } catch (err) {
      for (const p of stack.processes) {
        const unhandled = p.output.filter((l) => l.includes('"unhandled error"'));
        const last = p.output.filter((l) => !l.includes('"msg":"request"')).slice(-12);
        console.error([...unhandled.slice(0, 5), "--- last lines:", ...last].join("\n"));
      }
      throw err;
    } finally {
      await traffic.stop();
      alive = [];
      await stack.close();
      await brokerProxy?.close();
      await dbProxy.close();
    }
  },
});
