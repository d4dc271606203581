/**
 * The alert queue and its drainer against real Postgres and the Discord simulator on loopback:
 * dedup, priority, retries, dead letters, rate limits, budget, leases and concurrent drainers.
 */
import { breakerSettings, databaseSettings } from "../../../shared/platform/platform.ts";
import {
  assert,
  assertEquals,
  assertLess,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { AlertDrainer, RECORD_SENT } from "../../../shared/alerts/alert_drainer.ts";
import { DatabaseBusy, DatabaseUnavailable } from "../../../shared/errors.ts";
import { AlertFallback } from "../../../shared/alerts/alert_fallback.ts";
import {
  AlertQueue,
  type EnqueueResult,
  type NewAlert,
} from "../../../shared/alerts/alert_queue.ts";
import { Breakers } from "../../../shared/resilience/circuit_breaker.ts";
import { Database } from "../../../shared/db/db.ts";
import {
  DiscordClient,
  DiscordRateLimited,
  DiscordRejected,
} from "../../../shared/alerts/discord_client.ts";
import { DiscordWebhookState } from "../../../shared/alerts/discord_webhook_state.ts";
import { type Limits, parseLimits } from "../../../shared/limits.ts";
import { createLogger } from "../../../shared/logger.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import {
  type DiscordSimulator,
  type DiscordSimulatorOptions,
  startDiscordSimulator,
} from "../../../local/sandbox/discord.ts";
import { startSlackWebhookSimulator } from "../../../local/sandbox/slack_webhook.ts";
import { freshDatabase, onServer, type TestDatabase } from "../../support/db.ts";
import { FAST_LIMITS } from "../../support/env.ts";

const QUIET = createLogger({ write: () => {} });

/** Limits that keep these tests quick. */
const TEST_LIMITS = {
  ...FAST_LIMITS,
  ALERT_GROUP_WAIT_MS: "150",
  ALERT_RETRY_BASE_MS: "50",
  ALERT_RETRY_MAX_MS: "200",
  ALERT_DRAIN_BUDGET_MS: "8000",
  DISCORD_TIMEOUT_MS: "1000",
  BREAKER_VOLUME_THRESHOLD: "100",
};

interface Instance {
  db: Database;
  queue: AlertQueue;
  drainer: AlertDrainer;
}

interface Harness extends Instance {
  limits: Limits;
  sim: DiscordSimulator;
  /** Another queue and drainer on a second pool, as a second instance would have. */
  anotherInstance(): Promise<Instance>;
  close(): Promise<void>;
}

async function harness(
  limitOverrides: Record<string, string> = {},
  simOptions: DiscordSimulatorOptions = { bucketLimit: 100, bucketWindowMs: 1000 },
  random?: () => number,
): Promise<Harness> {
  const tdb: TestDatabase = await freshDatabase({ migrated: true });
  const limits = parseLimits({ ...TEST_LIMITS, ...limitOverrides });
  const migrations = await loadMigrations();
  const sim = await startDiscordSimulator(simOptions);
  const dbs: Database[] = [];
  const breakers: Breakers[] = [];
  const instance = async (): Promise<Instance> => {
    const db = new Database({
      url: tdb.url,
      ...databaseSettings(limits),
      poolMax: 4,
      serial: tdb.kind === "embedded",
      onConnect: async (sql) => void await migrate(sql, migrations),
    });
    dbs.push(db);
    await db.start();
    assert(db.up, "the test database is reachable");
    const b = new Breakers(breakerSettings(limits));
    breakers.push(b);
    const queue = new AlertQueue(db, limits, { random });
    const drainer = new AlertDrainer({
      queue,
      client: new DiscordClient({ webhookUrl: sim.url, timeoutMs: limits.DISCORD_TIMEOUT_MS }),
      webhook: new DiscordWebhookState(db, { webhookUrl: sim.url, limits }),
      breaker: b.get("discord", {
        isHealthy: (err) => err instanceof DiscordRejected || err instanceof DiscordRateLimited,
      }),
      limits,
      log: QUIET,
    });
    return { db, queue, drainer };
  };
  const first = await instance();
  return {
    ...first,
    limits,
    sim,
    anotherInstance: instance,
    async close() {
      for (const b of breakers) b.shutdown();
      for (const db of dbs) await db.close();
      await sim.close();
      await tdb.close();
    },
  };
}

const alert = (title: string, extra: Partial<NewAlert> = {}): NewAlert => ({
  severity: "info",
  title,
  message: `Body of ${title}`,
  ...extra,
});

async function rowsOf(db: Database) {
  return await db.query((sql) =>
    sql<
      {
        title: string;
        state: string;
        count: number;
        attempts: number;
        last_error: string | null;
        repeat_of: string | null;
      }[]
    >`select title, state, count, attempts, last_error, repeat_of from internal.alerts order by seq`
  );
}

Deno.test("20 alerts with one dedupKey become one message that states 20", async () => {
  const h = await harness();
  try {
    const results: EnqueueResult[] = [];
    for (let i = 0; i < 20; i++) {
      results.push(await h.queue.enqueue(alert("Disk full", { dedupKey: "disk:db-1" })));
    }
    assertEquals(results[0].coalesced, false);
    assert(results.slice(1).every((r) => r.coalesced && r.id === results[0].id));
    const report = await h.drainer.drain();
    assertEquals(report.sent, 1);
    assertEquals(h.sim.messages.length, 1);
    assertStringIncludes(h.sim.messages[0].content, "Disk full");
    assertStringIncludes(h.sim.messages[0].content, "occurred 20 times");
    assertEquals((await rowsOf(h.db)).map((r) => [r.state, r.count]), [["sent", 20]]);
  } finally {
    await h.close();
  }
});

Deno.test("a repeat after the group's message went out is sent once as 'occurred N more times'; past the window a new group starts", async () => {
  const h = await harness({ ALERT_DEDUP_WINDOW_SECONDS: "2" });
  try {
    await h.queue.enqueue(alert("CPU hot", { dedupKey: "cpu" }));
    await h.drainer.drain();
    const again: EnqueueResult[] = [];
    for (let i = 0; i < 3; i++) {
      again.push(await h.queue.enqueue(alert("CPU hot", { dedupKey: "cpu" })));
    }
    assertEquals(again.map((r) => r.coalesced), [false, true, true]);
    await h.drainer.drain();
    assertEquals(h.sim.messages.length, 2);
    assertStringIncludes(h.sim.messages[1].content, "occurred 3 more times since the last message");
    await new Promise((r) => setTimeout(r, 2100)); // the window passes
    await h.queue.enqueue(alert("CPU hot", { dedupKey: "cpu" }));
    await h.drainer.drain();
    assertEquals(h.sim.messages.length, 3);
    assert(!h.sim.messages[2].content.includes("occurred"), h.sim.messages[2].content);
    const rows = await rowsOf(h.db);
    assertEquals(rows.map((r) => [r.count, r.repeat_of !== null]), [[1, false], [3, true], [
      1,
      false,
    ]]);
  } finally {
    await h.close();
  }
});

Deno.test("a more severe alert counted into a group raises the group's severity", async () => {
  const h = await harness();
  try {
    await h.queue.enqueue(alert("Replication lag", { dedupKey: "lag" }));
    await h.queue.enqueue(alert("Replication lag", { dedupKey: "lag", severity: "critical" }));
    await h.drainer.drain();
    assertMatch(h.sim.messages[0].content, /^🔴 \*\*CRITICAL\*\*/);
  } finally {
    await h.close();
  }
});

Deno.test("drain sends critical first, then warning, then info, oldest first within each", async () => {
  const h = await harness();
  try {
    const order: [string, NewAlert["severity"]][] = [
      ["i1", "info"],
      ["w1", "warning"],
      ["c1", "critical"],
      ["i2", "info"],
      ["w2", "warning"],
      ["c2", "critical"],
    ];
    for (const [title, severity] of order) await h.queue.enqueue(alert(title, { severity }));
    await h.drainer.drain();
    const titles = h.sim.messages.map((m) => /· (\w+)/.exec(m.content)![1]);
    assertEquals(titles, ["c1", "c2", "w1", "w2", "i1", "i2"]);
  } finally {
    await h.close();
  }
});

Deno.test("occurrences counted while the message is being sent go out in a follow-up", async () => {
  const h = await harness();
  try {
    await h.queue.enqueue(alert("Queue backlog", { dedupKey: "backlog" }));
    await new Promise((r) => setTimeout(r, 200)); // past the group wait
    const claimed = await h.queue.claim();
    assert(claimed);
    assertEquals(claimed.count, 1);
    // Counted while a drainer holds the row (it has rendered "1" already).
    assertEquals(
      (await h.queue.enqueue(alert("Queue backlog", { dedupKey: "backlog" }))).coalesced,
      true,
    );
    await h.queue.markSent(claimed, "123");
    const rows = await rowsOf(h.db);
    assertEquals(rows.map((r) => [r.state, r.count, r.repeat_of !== null]), [
      ["sent", 2, false],
      ["queued", 1, true],
    ]);
    await h.drainer.drain();
    assertEquals(h.sim.messages.length, 1);
    assertStringIncludes(h.sim.messages[0].content, "occurred 1 more time since the last message");
  } finally {
    await h.close();
  }
});

Deno.test("a 4xx about the message (400, not 401/403/404 or 429) dead-letters the alert with Discord's reason, shown in the stats", async () => {
  const h = await harness();
  try {
    h.sim.failNext(1, 400);
    await h.queue.enqueue(alert("Refused"));
    await h.queue.enqueue(alert("Fine"));
    const report = await h.drainer.drain();
    assertEquals([report.sent, report.dead], [1, 1]);
    const rows = await rowsOf(h.db);
    assertEquals(rows.map((r) => [r.title, r.state, r.attempts]), [["Refused", "dead", 1], [
      "Fine",
      "sent",
      1,
    ]]);
    assertStringIncludes(rows[0].last_error!, "400");
    const stats = await h.queue.stats();
    assertEquals([stats.queued, stats.dead], [0, 1]);
    assertEquals(stats.recentDead[0].title, "Refused");
    assertStringIncludes(stats.recentDead[0].reason!, "400");
  } finally {
    await h.close();
  }
});

Deno.test("5xx are retried with backoff, then the alert is dead-lettered after ALERT_MAX_ATTEMPTS", async () => {
  // The cap leaves room for the doubling (the harness's 200 ms cap would flatten it).
  // Full jitter draws each delay from [0, step): a fixed draw of 3/4 makes the waits known.
  const h = await harness(
    {
      ALERT_MAX_ATTEMPTS: "3",
      ALERT_RETRY_BASE_MS: "200",
      ALERT_RETRY_MAX_MS: "1000",
    },
    undefined,
    () => 0.75,
  );
  try {
    h.sim.failNext(5, 502);
    const started = performance.now();
    await h.queue.enqueue(alert("Flaky"));
    const report = await h.drainer.drain();
    const took = performance.now() - started;
    assertEquals([report.retried, report.dead, report.sent], [2, 1, 0]);
    assertEquals(h.sim.unavailable, 3);
    // Backoff: 3/4 of 200 ms, then 3/4 of 400 ms, between the attempts.
    assert(took >= 300, `three attempts took only ${took} ms`);
    const [row] = await rowsOf(h.db);
    assertEquals([row.state, row.attempts], ["dead", 3]);
    assertStringIncludes(row.last_error!, "gave up after 3 attempts");
    assertEquals((await h.queue.stats()).dead, 1);
  } finally {
    await h.close();
  }
});

Deno.test("a timeout is retried with backoff and the alert delivered once Discord answers", async () => {
  const h = await harness({ DISCORD_TIMEOUT_MS: "150" });
  try {
    h.sim.hangNext(1, 600);
    await h.queue.enqueue(alert("Slow"));
    const report = await h.drainer.drain();
    assertEquals([report.retried, report.sent], [1, 1]);
    assertEquals(h.sim.messages.length, 1);
    const [row] = await rowsOf(h.db);
    assertEquals([row.state, row.attempts], ["sent", 2]);
  } finally {
    await h.close();
  }
});

Deno.test("a global 429 is waited out (retry_after) without using an attempt", async () => {
  const h = await harness();
  try {
    h.sim.rateLimitGlobally(400);
    await h.queue.enqueue(alert("one"));
    await h.queue.enqueue(alert("two"));
    const started = Date.now();
    const report = await h.drainer.drain();
    assertEquals([report.sent, report.deferred], [2, 1]);
    assertEquals(h.sim.rateLimited, 1);
    assert(h.sim.messages[0].receivedAt - started >= 350, "the first send waited out retry_after");
    assertEquals((await rowsOf(h.db)).map((r) => r.attempts), [1, 1]);
  } finally {
    await h.close();
  }
});

Deno.test("the drainer follows the bucket headers: 30 alerts through 5 per 500 ms, no 429", async () => {
  const h = await harness({}, { bucketLimit: 5, bucketWindowMs: 500 });
  try {
    for (let i = 0; i < 30; i++) await h.queue.enqueue(alert(`a${i}`));
    const report = await h.drainer.drain();
    assertEquals(report.sent, 30);
    assertEquals(h.sim.rateLimited, 0);
    assertEquals(new Set(h.sim.messages.map((m) => m.content)).size, 30);
  } finally {
    await h.close();
  }
});

Deno.test("drain stops within its budget and leaves the rest queued", async () => {
  const h = await harness({ ALERT_DRAIN_BUDGET_MS: "700" }, {
    bucketLimit: 2,
    bucketWindowMs: 1000,
  });
  try {
    for (let i = 0; i < 10; i++) await h.queue.enqueue(alert(`b${i}`));
    const started = Date.now();
    const report = await h.drainer.drain();
    assertLess(Date.now() - started, 700 + 1000, "stopped by the budget (plus at most one send)");
    assertEquals(report.stopped, "budget");
    assertEquals(report.sent, 2);
    assertEquals(report.remaining, 8);
    assertEquals((await h.queue.stats()).queued, 8);
  } finally {
    await h.close();
  }
});

Deno.test("a claim whose drainer died is taken over once its lease passes", async () => {
  const h = await harness({ ALERT_LEASE_MS: "300", DISCORD_TIMEOUT_MS: "100" });
  try {
    await h.queue.enqueue(alert("orphan"));
    const claimed = await h.queue.claim(); // ...and this drainer dies
    assert(claimed);
    assertEquals(await h.queue.claim(), null, "nobody else takes a row under lease");
    await new Promise((r) => setTimeout(r, 350));
    const report = await h.drainer.drain();
    assertEquals(report.sent, 1);
    assertEquals(h.sim.messages.length, 1);
  } finally {
    await h.close();
  }
});

Deno.test({
  name: "two drainers on two pools at once never send a message twice",
  ...onServer,
  async fn() {
    const h = await harness();
    try {
      const other = await h.anotherInstance();
      // One send first, so the fleet knows the webhook's bucket (100 a second here). While it
      // is unknown one request per DISCORD_TIMEOUT_MS goes out, and the second drainer would
      // wait out that window while the first sent everything.
      await h.queue.enqueue(alert("primer"));
      assertEquals((await h.drainer.drain()).sent, 1);
      for (let i = 0; i < 40; i++) {
        await h.queue.enqueue(alert(`m${i}`, { severity: i % 3 === 0 ? "critical" : "info" }));
      }
      // Each send takes a moment, so the second drainer starts while the first is still busy.
      h.sim.delayMs = 20;
      const [a, b] = await Promise.all([h.drainer.drain(), other.drainer.drain()]);
      assertEquals(a.sent + b.sent, 40);
      assert(a.sent > 0 && b.sent > 0, `both drainers worked: ${a.sent} + ${b.sent}`);
      assertEquals(h.sim.messages.length, 41);
      assertEquals(new Set(h.sim.messages.map((m) => m.content)).size, 41);
      assertEquals((await h.queue.stats()).queued, 0);
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name: "40 concurrent alerts with one key on two pools are one row counting 40",
  ...onServer,
  async fn() {
    const h = await harness();
    try {
      const other = await h.anotherInstance();
      const results = await Promise.all(
        Array.from(
          { length: 40 },
          (_, i) => (i % 2 ? other : h).queue.enqueue(alert("Burst", { dedupKey: "burst" })),
        ),
      );
      assertEquals(new Set(results.map((r) => r.id)).size, 1);
      assertEquals(results.filter((r) => !r.coalesced).length, 1);
      assertEquals((await rowsOf(h.db)).map((r) => [r.state, r.count]), [["queued", 40]]);
    } finally {
      await h.close();
    }
  },
});

Deno.test("a deleted webhook (404, code 10015) keeps every alert queued, tells the fallback once, and a probe after the interval delivers them", async () => {
  const h = await harness({ ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS: "1" });
  const slack = await startSlackWebhookSimulator();
  const breakers = new Breakers(breakerSettings(h.limits));
  try {
    const drainer = new AlertDrainer({
      queue: h.queue,
      client: new DiscordClient({ webhookUrl: h.sim.url, timeoutMs: h.limits.DISCORD_TIMEOUT_MS }),
      webhook: new DiscordWebhookState(h.db, { webhookUrl: h.sim.url, limits: h.limits }),
      fallback: new AlertFallback(h.db, { webhookUrl: slack.url, limits: h.limits, log: QUIET }),
      breaker: breakers.get("discord"),
      limits: h.limits,
      log: QUIET,
    });
    h.sim.deleted = true;
    for (let i = 0; i < 10; i++) await h.queue.enqueue(alert(`kept${i}`, { severity: "warning" }));
    const first = await drainer.drain();
    assertEquals([first.stopped, first.sent, first.dead, first.remaining], [
      "webhook_unusable",
      0,
      0,
      10,
    ]);
    const again = await drainer.drain();
    assertEquals(again.stopped, "webhook_unusable");
    assertEquals(h.sim.requests, 1, "nothing more reaches the deleted webhook before the probe");
    assertEquals(
      (await rowsOf(h.db)).map((r) => [r.state, r.attempts]).filter(([s, a]) =>
        s !== "queued" || a !== 0
      ),
      [],
    );
    assertEquals(slack.messages.length, 1);
    assertMatch(slack.messages[0].text, /webhook is unusable .*Unknown Webhook/);
    const stats = await h.queue.stats();
    assertEquals([stats.queued, stats.dead], [10, 0]);

    h.sim.deleted = false;
    await new Promise((r) => setTimeout(r, 1100)); // the probe interval
    const back = await drainer.drain();
    assertEquals([back.sent, back.remaining], [10, 0]);
    assertEquals(h.sim.messages.length, 10);
    assertEquals(slack.messages.length, 1, "no second notice");
  } finally {
    breakers.shutdown();
    await slack.close();
    await h.close();
  }
});

Deno.test("recording a sent alert is retried at one level: never after DatabaseBusy (the database already re-ran it), once after a dropped connection", async () => {
  let runs = 0;
  await assertRejects(
    () =>
      RECORD_SENT.execute(() => {
        runs++;
        throw new DatabaseBusy("still conflicting after 5 attempts");
      }),
    DatabaseBusy,
  );
  assertEquals(runs, 1, "DatabaseBusy means the database's own retries are spent");
  runs = 0;
  await assertRejects(
    () =>
      RECORD_SENT.execute(() => {
        runs++;
        throw new DatabaseUnavailable(1_000, new Error("connection refused"));
      }),
    DatabaseUnavailable,
  );
  assertEquals(runs, 2, "one more attempt after a dropped connection, and no more");
});
