/**
 * Direct operator alerts: straight to the Discord simulator, once per kind per cooldown, never
 * throwing, recorded in the queue table once the database is reachable; and, through the real
 * server with a fault proxy in front of Postgres, one alert for a whole database outage.
 */
import { breakerSettings, databaseSettings } from "../../../shared/platform/platform.ts";
import { assert, assertEquals, assertMatch } from "@std/assert";
import postgres from "postgres";
import { AlertDrainer } from "../../../shared/alerts/alert_drainer.ts";
import { AlertQueue } from "../../../shared/alerts/alert_queue.ts";
import { Breakers } from "../../../shared/resilience/circuit_breaker.ts";
import { Database } from "../../../shared/db/db.ts";
import { DiscordClient } from "../../../shared/alerts/discord_client.ts";
import { DiscordWebhookState } from "../../../shared/alerts/discord_webhook_state.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { createLogger } from "../../../shared/logger.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { OperatorAlerts, operatorAlerts } from "../../../shared/alerts/operator_alerts.ts";
import { startDiscordSimulator } from "../../../local/sandbox/discord.ts";
import { freshDatabase, onServer } from "../../support/db.ts";
import { FAST_LIMITS, serviceToken, testEnv } from "../../support/env.ts";
import { startFaultProxy } from "../../support/fault_proxy.ts";
import { startTestServer } from "../../support/server.ts";

const limits = parseLimits({ ...FAST_LIMITS, DISCORD_TIMEOUT_MS: "1000" });

async function startDb(url: string, embedded: boolean) {
  const migrations = await loadMigrations();
  const db = new Database({
    url,
    ...databaseSettings(limits),
    poolMax: 2,
    serial: embedded,
    onConnect: async (sql) => void await migrate(sql, migrations),
  });
  await db.start();
  return db;
}

/** OperatorAlerts wired as the platform wires it, with its background work collected. */
function direct(webhookUrl: string, db: () => Database | undefined) {
  const work: Promise<unknown>[] = [];
  const logs: string[] = [];
  const alerts = operatorAlerts({
    env: { DISCORD_WEBHOOK_URL: webhookUrl },
    limits,
    log: createLogger({ write: (l) => logs.push(l) }),
    db,
    background: (w) => work.push(w),
  })!;
  const settle = async () => {
    while (work.length) await Promise.allSettled(work.splice(0));
  };
  return { alerts, logs, settle };
}

async function directRows(db: Database) {
  return await db.query((sql) =>
    sql<{ state: string; source: string; title: string; discord_message_id: string | null }[]>`
      select state, source, title, discord_message_id from internal.alerts order by seq`
  );
}

Deno.test("operatorAlerts() is off without a well-formed DISCORD_WEBHOOK_URL", () => {
  const base = {
    limits,
    log: createLogger({ write: () => {} }),
    db: () => undefined,
    background: () => {},
  };
  assertEquals(operatorAlerts({ ...base, env: {} }), undefined);
  assertEquals(operatorAlerts({ ...base, env: { DISCORD_WEBHOOK_URL: "not a url" } }), undefined);
  assert(
    operatorAlerts({
      ...base,
      env: { DISCORD_WEBHOOK_URL: "https://discord.com/api/webhooks/1/x" },
    }) instanceof OperatorAlerts,
  );
});

Deno.test("a kind is sent at most once per cooldown; each is logged and recorded as sent", async () => {
  const tdb = await freshDatabase({ migrated: true });
  const sim = await startDiscordSimulator();
  const db = await startDb(tdb.url, tdb.kind === "embedded");
  try {
    const d = direct(sim.url, () => db);
    for (let i = 0; i < 10; i++) d.alerts.alert("database", "Database unavailable", "fail-safe");
    d.alerts.alert("breaker:broker", "Circuit open: broker", "paused");
    await d.settle();
    assertEquals(sim.messages.length, 2);
    assertMatch(sim.messages[0].content, /^🔴 \*\*CRITICAL\*\* · Database unavailable/);
    assertMatch(sim.messages[1].content, /Circuit open: broker/);
    assertEquals(sim.messages[0].allowedMentions, { parse: [] });
    assertEquals(d.logs.filter((l) => l.includes('"msg":"operator alert"')).length, 11);
    const rows = await directRows(db);
    assertEquals(rows.map((r) => [r.state, r.source, r.title]), [
      ["sent", "direct", "Database unavailable"],
      ["sent", "direct", "Circuit open: broker"],
    ]);
    assertEquals(rows[0].discord_message_id, sim.messages[0].id);
  } finally {
    await db.close();
    await sim.close();
    await tdb.close();
  }
});

Deno.test("a direct alert Discord could not take is queued, and the queue delivers it later", async () => {
  const tdb = await freshDatabase({ migrated: true });
  const sim = await startDiscordSimulator();
  const db = await startDb(tdb.url, tdb.kind === "embedded");
  const breakers = new Breakers(breakerSettings(limits));
  try {
    sim.down = true;
    const d = direct(sim.url, () => db);
    d.alerts.alert("breaker:market-data", "Circuit open: market-data", "paused");
    await d.settle();
    assertEquals(sim.messages.length, 0);
    assertEquals((await directRows(db)).map((r) => [r.state, r.source]), [["queued", "direct"]]);
    sim.down = false;
    const queue = new AlertQueue(db, limits);
    const drainer = new AlertDrainer({
      queue,
      client: new DiscordClient({ webhookUrl: sim.url, timeoutMs: 1000 }),
      webhook: new DiscordWebhookState(db, { webhookUrl: sim.url, limits }),
      breaker: breakers.get("discord"),
      limits,
      log: createLogger({ write: () => {} }),
    });
    assertEquals((await drainer.drain()).sent, 1);
    assertMatch(sim.messages[0].content, /Circuit open: market-data/);
  } finally {
    breakers.shutdown();
    await db.close();
    await sim.close();
    await tdb.close();
  }
});

Deno.test("alert() never throws: unreachable webhook and no database", async () => {
  const sim = await startDiscordSimulator();
  const url = sim.url;
  await sim.close(); // nothing listens there any more
  const d = direct(url, () => undefined);
  d.alerts.alert("database", "Database unavailable", "fail-safe");
  d.alerts.databaseUp();
  await d.settle();
  assert(d.logs.some((l) => l.includes("direct operator alert not delivered")));
});

Deno.test({
  name:
    "cutting the database sends one direct critical alert, not one per request, recorded once it is back",
  ...onServer,
  async fn() {
    const tdb = await freshDatabase({ migrated: true });
    const target = new URL(tdb.url);
    const proxy = await startFaultProxy({
      hostname: target.hostname,
      port: Number(target.port || 5432),
    });
    const sim = await startDiscordSimulator();
    const server = await startTestServer(
      testEnv(proxy.url(tdb.url), { DISCORD_WEBHOOK_URL: sim.url }),
      { only: ["discord-alert", "status"] },
    );
    const auth = {
      authorization: `Bearer ${await serviceToken()}`,
      "content-type": "application/json",
    };
    const fire = () =>
      Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? server.call("status") : server.call("discord-alert", {
            method: "POST",
            headers: auth,
            body: JSON.stringify({ severity: "info", title: "t", message: "m" }),
          })).then(async (r) => {
            await r.body?.cancel();
            return r.status;
          })),
      );
    try {
      proxy.cut();
      for (let round = 0; round < 3; round++) {
        const statuses = await fire();
        assert(statuses.every((s) => s === 503), statuses.join(","));
      }
      await sim.waitForMessages(1, 10_000);
      await new Promise((r) => setTimeout(r, 500));
      assertEquals(sim.messages.length, 1, "one alert for the whole outage");
      assertMatch(sim.messages[0].content, /^🔴 \*\*CRITICAL\*\* · Database unavailable/);

      proxy.heal();
      const admin = postgres(tdb.url, { max: 1, onnotice: () => {} });
      try {
        type Row = { state: string; source: string; discord_message_id: string };
        let rows: Row[] = [];
        for (let i = 0; i < 50 && rows.length === 0; i++) {
          await new Promise((r) => setTimeout(r, 200));
          rows = [
            ...await admin<Row[]>`
            select state, source, discord_message_id from internal.alerts where source = 'direct'`,
          ];
        }
        assertEquals(rows.map((r) => ({ ...r })), [
          { state: "sent", source: "direct", discord_message_id: sim.messages[0].id },
        ]);
        // A second outage within the cooldown: logged, not sent again.
        proxy.cut();
        await fire();
        await new Promise((r) => setTimeout(r, 500));
        assertEquals(sim.messages.length, 1);
        proxy.heal();
      } finally {
        await admin.end();
      }
    } finally {
      await server.close();
      await proxy.close();
      await sim.close();
      await tdb.close();
    }
  },
});
