/**
 * The local server runs the migrations' scheduled jobs itself (issue 23): with nobody calling a
 * route, the order sync brings a fill in and the alert drain delivers queued alerts, including
 * alerts queued while Discord's breaker was open (which used to stay queued until another alert
 * arrived). The schedule is driven through `server.jobs.runDue` rather than waited for.
 */
import { assert, assertEquals } from "@std/assert";
import { startBrokerSimulator } from "../../local/sandbox/broker.ts";
import { startDiscordSimulator } from "../../local/sandbox/discord.ts";
import type { JobRunner } from "../../local/job_runner.ts";
import { freshDatabase } from "../support/db.ts";
import { serviceToken, testEnv } from "../support/env.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { MARKET, trader, until } from "../functions/broker-order/harness.ts";

const BROKER = { keyId: "sched-key-id", secretKey: "sched-secret" };
const ALERT_LIMITS = {
  DB_QUERY_TIMEOUT_MS: "5000",
  ALERT_GROUP_WAIT_MS: "200",
  ALERT_RETRY_BASE_MS: "100",
  ALERT_RETRY_MAX_MS: "300",
  ALERT_DRAIN_BUDGET_MS: "5000",
};

/** The runner, once the server has read the jobs from the migrated database. */
async function jobsOf(server: TestServer): Promise<JobRunner> {
  await until(() => server.jobs !== null, 15_000, "the scheduled jobs to be read");
  return server.jobs!;
}

/** Runs every job due at the next `minutes` minutes, one minute at a time. */
async function nextMinutes(jobs: JobRunner, minutes: number, from: { at: number }) {
  const started: string[] = [];
  for (let i = 0; i < minutes; i++) {
    from.at += 60_000;
    started.push(...(await jobs.runDue(from.at)).started);
  }
  return started;
}

Deno.test("the local schedule delivers a fill and queued alerts with nobody calling a route", async () => {
  const db = await freshDatabase({ migrated: true });
  const broker = await startBrokerSimulator(BROKER);
  const discord = await startDiscordSimulator({ bucketLimit: 10, bucketWindowMs: 1000 });
  const env = testEnv(db.url, {
    BROKER_API_URL: broker.url,
    BROKER_API_KEY_ID: BROKER.keyId,
    BROKER_API_SECRET_KEY: BROKER.secretKey,
    DISCORD_WEBHOOK_URL: discord.url,
    SUPABASE_SERVICE_ROLE_KEY: await serviceToken(),
    ...ALERT_LIMITS,
  });
  const server = await startTestServer(env, { only: ["broker-order", "discord-alert"] });
  try {
    const jobs = await jobsOf(server);
    assertEquals(jobs.schedule.map((j) => j.name), ["broker-order-sync", "discord-alert-drain"]);
    const t = await trader(server.call);
    const order = await (await t.order(MARKET)).json();
    assertEquals(order.status, "accepted");

    discord.down = true;
    const alert = await server.call("discord-alert", {
      method: "POST",
      headers: {
        authorization: `Bearer ${env.SUPABASE_SERVICE_ROLE_KEY}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ severity: "warning", title: "queued-while-down", message: "m" }),
    });
    assertEquals(alert.status, 202);
    await until(() => discord.unavailable > 0, 10_000, "a delivery attempt while Discord is down");
    discord.down = false;
    broker.fillNow(order.brokerOrderId);
    await new Promise((r) => setTimeout(r, 400)); // the alert's retry backoff is due

    const clock = { at: Date.now() };
    const started = await nextMinutes(jobs, 1, clock);
    assertEquals(started.sort(), ["broker-order-sync", "discord-alert-drain"]);
    assertEquals((await (await t.one(order.id)).json()).status, "filled");
    assert(discord.messages.some((m) => m.content.includes("queued-while-down")));
  } finally {
    await server.close();
    await discord.close();
    await broker.close();
    await db.close();
  }
});

Deno.test("alerts queued while Discord's breaker was open are delivered by the scheduled drain once Discord is back: no new alert, no manual call", async () => {
  const db = await freshDatabase({ migrated: true });
  const discord = await startDiscordSimulator({ bucketLimit: 50, bucketWindowMs: 1000 });
  const key = await serviceToken();
  const env = testEnv(db.url, {
    DISCORD_WEBHOOK_URL: discord.url,
    SUPABASE_SERVICE_ROLE_KEY: key,
    ...ALERT_LIMITS,
  });
  const server = await startTestServer(env, { only: ["discord-alert", "status"] });
  try {
    const jobs = await jobsOf(server);
    discord.down = true;
    for (let i = 0; i < 8; i++) {
      const res = await server.call("discord-alert", {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ severity: "critical", title: `breaker-${i}`, message: "m" }),
      });
      assertEquals(res.status, 202);
      await res.body?.cancel();
    }
    const breaker = async () => {
      const res = await server.call("status", { headers: { authorization: `Bearer ${key}` } });
      const { dependencies } = await res.json();
      return dependencies.breakers.find((b: { name: string }) => b.name === "discord")?.state;
    };
    const clock = { at: Date.now() };
    // The scheduled drain meets the open breaker: nothing is sent, everything stays queued.
    for (let i = 0; i < 20 && (await breaker()) !== "open"; i++) {
      await nextMinutes(jobs, 1, clock);
      await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(await breaker(), "open");
    assertEquals(await nextMinutes(jobs, 1, clock), ["discord-alert-drain"]);
    assertEquals(discord.messages.length, 0);

    discord.down = false; // Discord is back; nobody enqueues anything, nobody calls /drain
    await new Promise((r) => setTimeout(r, 1_100)); // BREAKER_RESET_MS = 1000 in tests
    const delivered = () =>
      new Set(discord.messages.map((m) => /breaker-\d/.exec(m.content)?.[0]).filter(Boolean));
    for (let i = 0; i < 10 && delivered().size < 8; i++) {
      await nextMinutes(jobs, 1, clock);
      await new Promise((r) => setTimeout(r, 300)); // retry backoffs come due
    }
    assertEquals(delivered().size, 8, "every alert queued during the outage went out");
    const [{ queued }] = await server.platform.db.query((sql) =>
      sql<{ queued: number }[]>`select count(*)::int as queued from internal.alerts
        where state <> 'sent' and title like 'breaker-%'`
    );
    assertEquals(queued, 0);
  } finally {
    await server.close();
    await discord.close();
    await db.close();
  }
});
