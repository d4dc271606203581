/**
 * The Discord webhook's fleet-wide state (bucket, health) and the fallback channel's cooldown,
 * against real Postgres: what several instances see of one row.
 */
import { databaseSettings } from "../../../shared/platform/platform.ts";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { AlertFallback, slackEscape } from "../../../shared/alerts/alert_fallback.ts";
import { Database } from "../../../shared/db/db.ts";
import { DiscordWebhookState, webhookId } from "../../../shared/alerts/discord_webhook_state.ts";
import { type Limits, parseLimits } from "../../../shared/limits.ts";
import { createLogger } from "../../../shared/logger.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { startSlackWebhookSimulator } from "../../../local/sandbox/slack_webhook.ts";
import { freshDatabase, onServer, type TestDatabase } from "../../support/db.ts";
import { FAST_LIMITS } from "../../support/env.ts";

const WEBHOOK = "http://127.0.0.1:9/api/webhooks/1100000000000000001/secret-token";
const QUIET = createLogger({ write: () => {} });

interface Harness {
  limits: Limits;
  /** A state on its own pool, as another instance would have. */
  instance(): Promise<{ db: Database; webhook: DiscordWebhookState }>;
  close(): Promise<void>;
}

async function harness(overrides: Record<string, string> = {}): Promise<Harness> {
  const tdb: TestDatabase = await freshDatabase({ migrated: true });
  const limits = parseLimits({ ...FAST_LIMITS, DISCORD_TIMEOUT_MS: "1000", ...overrides });
  const migrations = await loadMigrations();
  const dbs: Database[] = [];
  return {
    limits,
    async instance() {
      const db = new Database({
        url: tdb.url,
        ...databaseSettings(limits),
        poolMax: 4,
        serial: tdb.kind === "embedded",
        onConnect: async (sql) => void await migrate(sql, migrations),
      });
      dbs.push(db);
      await db.start();
      return { db, webhook: new DiscordWebhookState(db, { webhookUrl: WEBHOOK, limits }) };
    },
    async close() {
      for (const db of dbs) await db.close();
      await tdb.close();
    },
  };
}

const headers = (remaining: number, resetAfterMs: number, limit = 5) => ({
  bucket: "abc",
  limit,
  remaining,
  resetAfterMs,
});

Deno.test("webhookId() never contains the token and is stable per webhook", async () => {
  const id = await webhookId(WEBHOOK);
  assertEquals(id, await webhookId(`${WEBHOOK}?wait=true`));
  assert(!id.includes("secret"));
  assertEquals(id.length, 32);
  assert(id !== await webhookId(WEBHOOK.replace("secret-token", "other")));
});

Deno.test("acquire() grants one request while the limit is unknown, then what the headers state", async () => {
  const h = await harness();
  try {
    const { webhook } = await h.instance();
    assertEquals(await webhook.acquire(), { granted: true, probe: false });
    const waiting = await webhook.acquire();
    assert(!waiting.granted && waiting.waitMs > 0, JSON.stringify(waiting));
    await webhook.observe({ outcome: "sent", rateLimit: headers(3, 2000) });
    const grants = [];
    for (let i = 0; i < 5; i++) grants.push((await webhook.acquire()).granted);
    assertEquals(grants, [true, true, true, false, false]);
    const next = await webhook.acquire();
    assert(!next.granted && next.waitMs > 0 && next.waitMs <= 2000, JSON.stringify(next));
    assertEquals(next.unusableReason, null);
  } finally {
    await h.close();
  }
});

Deno.test("an answer without headers lets the next request go; a 429 waits retry_after", async () => {
  const h = await harness();
  try {
    const { webhook } = await h.instance();
    assert((await webhook.acquire()).granted);
    await webhook.observe({ outcome: "failed", reason: "answered 503" });
    assert((await webhook.acquire()).granted, "a 503 without headers taught nothing to wait for");
    await webhook.observe({ outcome: "rate_limited", retryAfterMs: 300, global: true });
    const paused = await webhook.acquire();
    assert(!paused.granted && paused.waitMs > 0 && paused.waitMs <= 300, JSON.stringify(paused));
    await new Promise((r) => setTimeout(r, 350));
    assert((await webhook.acquire()).granted);
    const status = await webhook.status();
    assertEquals(status?.rateLimited, 1);
    assert(status?.failingSince !== null, "still failing: nothing was sent yet");
  } finally {
    await h.close();
  }
});

Deno.test({
  name: "two instances share one bucket: 40 concurrent acquires get exactly the 5 remaining",
  ...onServer,
  async fn() {
    const h = await harness();
    try {
      const a = await h.instance();
      const b = await h.instance();
      assert((await a.webhook.acquire()).granted);
      await a.webhook.observe({ outcome: "sent", rateLimit: headers(5, 5000, 6) });
      const permits = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).webhook.acquire()),
      );
      assertEquals(permits.filter((p) => p.granted).length, 5);
      // Answers of those five arrive out of order: the fleet's own count stays the bound.
      await b.webhook.observe({ outcome: "sent", rateLimit: headers(3, 4900, 6) });
      assertEquals((await a.webhook.acquire()).granted, false);
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name:
    "401/403/404 makes the webhook unusable for every instance; one probe per interval; a success restores it",
  ...onServer,
  async fn() {
    const h = await harness({ ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS: "1" });
    try {
      const a = await h.instance();
      const b = await h.instance();
      assert((await a.webhook.acquire()).granted);
      const reason = "Discord refused the message with 404 (code 10015): Unknown Webhook";
      const gone = await a.webhook.observe({ outcome: "gone", reason });
      assertEquals([gone.becameUnusable, gone.recovered], [true, false]);
      const blocked = await b.webhook.acquire();
      assert(!blocked.granted && blocked.waitMs > 0 && blocked.waitMs <= 1000);
      assertEquals(blocked.unusableReason, reason);
      assertEquals((await b.webhook.status())?.usable, false);
      await new Promise((r) => setTimeout(r, 1100));
      const probes = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).webhook.acquire()),
      );
      assertEquals(probes.filter((p) => p.granted).length, 1, "one probe for the fleet");
      assertEquals(probes.find((p) => p.granted), { granted: true, probe: true });
      const back = await b.webhook.observe({ outcome: "sent", rateLimit: headers(4, 2000) });
      assertEquals([back.becameUnusable, back.recovered], [false, true]);
      assertEquals((await a.webhook.acquire()).granted, true);
      const status = await a.webhook.status();
      assertEquals([status?.usable, status?.unusableReason], [true, null]);
    } finally {
      await h.close();
    }
  },
});

Deno.test("the fallback channel gets each kind once per cooldown, escaped; a failed post frees the cooldown", async () => {
  const h = await harness();
  const slack = await startSlackWebhookSimulator();
  try {
    const a = await h.instance();
    const fallback = (db: Database) =>
      new AlertFallback(db, { webhookUrl: slack.url, limits: h.limits, log: QUIET });
    const results = [];
    for (let i = 0; i < 5; i++) {
      results.push(await fallback(a.db).notify("discord-unusable", "broken <!channel> & <@U1>"));
    }
    assertEquals(results, ["sent", "cooldown", "cooldown", "cooldown", "cooldown"]);
    assertEquals(slack.messages.map((m) => m.text), ["broken &lt;!channel&gt; &amp; &lt;@U1&gt;"]);
    assertEquals(slackEscape("a<b>&c"), "a&lt;b&gt;&amp;c");

    slack.down = true;
    assertEquals(await fallback(a.db).notify("critical:disk", "disk"), "failed");
    slack.down = false;
    assertEquals(await fallback(a.db).notify("critical:disk", "disk"), "sent");
    assertMatch(slack.messages[1].text, /^disk$/);
  } finally {
    await slack.close();
    await h.close();
  }
});

Deno.test({
  name: "two instances notifying one kind at once send it once",
  ...onServer,
  async fn() {
    const h = await harness();
    const slack = await startSlackWebhookSimulator();
    try {
      const a = await h.instance();
      const b = await h.instance();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          new AlertFallback((i % 2 ? a : b).db, {
            webhookUrl: slack.url,
            limits: h.limits,
            log: QUIET,
          }).notify("discord-failing", "Discord is failing")),
      );
      assertEquals(results.filter((r) => r === "sent").length, 1);
      assertEquals(slack.messages.length, 1);
    } finally {
      await slack.close();
      await h.close();
    }
  },
});
