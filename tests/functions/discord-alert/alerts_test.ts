/**
 * discord-alert through the real local server, real Postgres and the Discord simulator on
 * loopback (which enforces a rate-limit bucket and answers 429 past it).
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { DISCORD_LIMITS } from "../../../shared/alerts/discord_text.ts";
import {
  type DiscordSimulator,
  type DiscordSimulatorOptions,
  parseMentions,
  startDiscordSimulator,
} from "../../../local/sandbox/discord.ts";
import { freshDatabase, onServer, type TestDatabase } from "../../support/db.ts";
import { serviceToken, testEnv, userToken } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";

interface Setup {
  tdb: TestDatabase;
  sim: DiscordSimulator;
  server: TestServer;
  token: string;
  post(body: unknown, init?: RequestInit): Promise<Response>;
  drain(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/** The suite's limits: short retries, and room for a busy machine. */
const ALERT_TEST_LIMITS = {
  // The embedded database serves one connection at a time on a busy machine.
  DB_QUERY_TIMEOUT_MS: "5000",
  ALERT_GROUP_WAIT_MS: "1000",
  ALERT_RETRY_BASE_MS: "200",
  ALERT_RETRY_MAX_MS: "1000",
  ALERT_DRAIN_BUDGET_MS: "5000",
};

async function setup(
  limits: Record<string, string> = {},
  simOptions: DiscordSimulatorOptions = { bucketLimit: 10, bucketWindowMs: 1000 },
  tdbIn?: TestDatabase,
): Promise<Setup> {
  const tdb = tdbIn ?? await freshDatabase({ migrated: true });
  const sim = await startDiscordSimulator(simOptions);
  const server = await startTestServer(
    testEnv(tdb.url, { DISCORD_WEBHOOK_URL: sim.url, ...ALERT_TEST_LIMITS, ...limits }),
    { only: ["discord-alert", "status"] },
  );
  const token = await serviceToken();
  const auth = { authorization: `Bearer ${token}` };
  return {
    tdb,
    sim,
    server,
    token,
    post: (body, init = {}) =>
      server.call("discord-alert", {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify(body),
        ...init,
      }),
    async drain() {
      const res = await server.call("discord-alert/drain", { method: "POST", headers: auth });
      assertEquals(res.status, 200);
      return await res.json();
    },
    async close() {
      await server.close();
      await sim.close();
      if (!tdbIn) await tdb.close();
    },
  };
}

/** Acts as the scheduler: calls /drain until `done()` or the deadline. */
async function untilDelivered(s: Setup, done: () => boolean, timeoutMs: number, everyMs = 1500) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not delivered in time: ${s.sim.messages.length}`);
    await new Promise((r) => setTimeout(r, everyMs));
    if (!done()) await s.drain();
  }
}

/** The queue's rows, read through the server's own pool (the embedded database has one connection). */
async function queueRows(s: Setup) {
  const rows = await s.server.platform.db.query((sql) =>
    sql<{ state: string; source: string; title: string; count: number }[]>`
      select state, source, title, count from internal.alerts order by seq`
  );
  return rows.map((r) => ({ ...r }));
}

Deno.test("POST and /drain guard their input and queue nothing they refuse", async (t) => {
  const s = await setup();
  try {
    await t.step("401 without a token, 403 with a user's token", async () => {
      const body = JSON.stringify({ severity: "info", title: "t", message: "m" });
      const none = await s.server.call("discord-alert", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      assertEquals(none.status, 401);
      assertEquals((await none.json()).error.code, "MISSING_TOKEN");
      const user = await s.server.call("discord-alert", {
        method: "POST",
        headers: {
          authorization: `Bearer ${await userToken()}`,
          "content-type": "application/json",
        },
        body,
      });
      assertEquals(user.status, 403);
      await user.body?.cancel();
      const drain = await s.server.call("discord-alert/drain", { method: "POST" });
      assertEquals(drain.status, 401);
      await drain.body?.cancel();
      assertEquals(await queueRows(s), []);
    });
    await t.step(
      "a clear 4xx for bad input: unknown fields, bad values, wrong type, too large, wrong method",
      async () => {
        const cases: [unknown, number, string][] = [
          [{ severity: "info", title: "t", message: "m", extra: 1 }, 400, "VALIDATION_FAILED"],
          [{ severity: "fatal", title: "t", message: "m" }, 400, "VALIDATION_FAILED"],
          [{ severity: "info", title: "", message: "m" }, 400, "VALIDATION_FAILED"],
          [{ severity: "info", title: "x".repeat(257), message: "m" }, 400, "VALIDATION_FAILED"],
          [{ severity: "info", title: "t", message: "m".repeat(16_001) }, 400, "VALIDATION_FAILED"],
          [
            { severity: "info", title: "t", message: "m", dedupKey: "has space" },
            400,
            "VALIDATION_FAILED",
          ],
          [
            { severity: "info", title: "<script>x()</script>", message: "m" },
            400,
            "VALIDATION_FAILED",
          ],
          [{ severity: "info", message: "m" }, 400, "VALIDATION_FAILED"],
        ];
        for (const [body, status, code] of cases) {
          const res = await s.post(body);
          assertEquals(res.status, status, JSON.stringify(body).slice(0, 80));
          const json = await res.json();
          assertEquals(json.error.code, code);
          assert(json.error.issues.length > 0);
        }
        const malformed = await s.post(undefined, { body: "{not json" });
        assertEquals([malformed.status, (await malformed.json()).error.code], [
          400,
          "MALFORMED_JSON",
        ]);
        const wrongType = await s.post(undefined, {
          headers: { authorization: `Bearer ${s.token}`, "content-type": "text/plain" },
          body: "hi",
        });
        assertEquals(wrongType.status, 415);
        await wrongType.body?.cancel();
        const huge = await s.post({ severity: "info", title: "t", message: "m".repeat(70_000) });
        assertEquals(huge.status, 413);
        await huge.body?.cancel();
        const get = await s.server.call("discord-alert", {
          headers: { authorization: `Bearer ${s.token}` },
        });
        assertEquals([get.status, get.headers.get("allow")], [405, "POST"]);
        await get.body?.cancel();
        assertEquals(await queueRows(s), []);
      },
    );
  } finally {
    await s.close();
  }
});

Deno.test("100 alerts are all delivered exactly once, with at most one 429", async () => {
  const s = await setup({}, { bucketLimit: 10, bucketWindowMs: 1000 });
  try {
    const ids = new Set<string>();
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(
        Array.from(
          { length: 10 },
          (_, i) => s.post({ severity: "warning", title: `alert-${batch * 10 + i}`, message: "m" }),
        ),
      );
      for (const res of answers) {
        const body = await res.json();
        assertEquals(res.status, 202, JSON.stringify(body));
        assertEquals(body.coalesced, false);
        ids.add(body.id);
      }
    }
    assertEquals(ids.size, 100);
    await untilDelivered(s, () => s.sim.messages.length >= 100, 40_000, 3000);
    await new Promise((r) => setTimeout(r, 300));
    assertEquals(s.sim.messages.length, 100);
    const titles = new Set(s.sim.messages.map((m) => /alert-\d+/.exec(m.content)![0]));
    assertEquals(titles.size, 100);
    assert(s.sim.rateLimited <= 1, `${s.sim.rateLimited} 429s`);
    assert(s.sim.messages.every((m) => JSON.stringify(m.allowedMentions) === '{"parse":[]}'));
  } finally {
    await s.close();
  }
});

Deno.test("20 alerts with one dedupKey become one message that counts them", async () => {
  const s = await setup();
  try {
    const answers = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          s.post({
            severity: "critical",
            title: "Broker API failing",
            message: "5xx",
            dedupKey: "broker-5xx",
          }),
      ),
    );
    const bodies = await Promise.all(answers.map((r) => r.json()));
    assert(answers.every((r) => r.status === 202));
    assertEquals(bodies.filter((b) => !b.coalesced).length, 1);
    assertEquals(new Set(bodies.map((b) => b.id)).size, 1);
    await s.sim.waitForMessages(1, 10_000);
    await new Promise((r) => setTimeout(r, 1500)); // nothing else follows
    assertEquals(s.sim.messages.length, 1);
    assertMatch(s.sim.messages[0].content, /Broker API failing[\s\S]*occurred 20 times/);
  } finally {
    await s.close();
  }
});

Deno.test("critical alerts overtake queued ones", async () => {
  const s = await setup({}, { bucketLimit: 1, bucketWindowMs: 700 });
  try {
    for (const title of ["info-1", "info-2", "info-3"]) {
      assertEquals((await s.post({ severity: "info", title, message: "m" })).status, 202);
    }
    assertEquals((await s.post({ severity: "critical", title: "crit", message: "m" })).status, 202);
    await untilDelivered(s, () => s.sim.messages.length >= 4, 15_000);
    const order = s.sim.messages.map((m) => /(info-\d|crit)/.exec(m.content)![1]);
    // info-1 may have gone out before the critical one arrived; nothing else may precede it.
    assert(order.indexOf("crit") <= 1, order.join(","));
    assertEquals(order.filter((t) => t !== "crit"), ["info-1", "info-2", "info-3"]);
  } finally {
    await s.close();
  }
});

Deno.test("hostile text arrives neutralized and within Discord's limits", async () => {
  const s = await setup();
  try {
    const hostile = [
      "@everyone @here <@123456789012345678> <@!123456789012345678> <@&223456789012345678>",
      "<#323456789012345678> &lt;@423456789012345678&gt; @\u200Beveryone",
      "<script>alert(1)</script><img src=x onerror=alert(1)><b>bold</b>",
      "[Reset your password](https://evil.example/phish) and [https://bank.example](https://evil.example)",
      "```\ncode block that never ends",
      "# Huge header\n> quote\n||spoiler||",
      "x".repeat(10_000),
    ].join("\n");
    const res = await s.post({
      severity: "warning",
      title: "@everyone <i>[click](https://evil.example)</i>",
      message: hostile,
    });
    assertEquals(res.status, 202);
    await s.sim.waitForMessages(1, 10_000);
    const m = s.sim.messages[0];
    assert(m.content.length <= DISCORD_LIMITS.content, `${m.content.length} characters`);
    assert(m.content.endsWith("…"), "cut with an ellipsis");
    assertEquals(m.mentions, [], "no mention Discord would parse");
    assertEquals(parseMentions(m.content), []);
    assertEquals(m.pinged, false);
    assertEquals(m.allowedMentions, { parse: [] });
    assert(!/<script|<img|onerror|<b>/i.test(m.content), "no HTML");
    assert(!/(?<!\\)\[[^\]]*(?<!\\)\]\(/.test(m.content), "no masked link survives");
    assert(!/(?<!\\)```/.test(m.content), "no code fence survives");
    assert(!/^#/m.test(m.content), "no heading");
    assert(!/(?<!\\)\|\|/.test(m.content), "no spoiler");
    assertMatch(m.content, /Reset your password/);
  } finally {
    await s.close();
  }
});

Deno.test("while Discord is down for 10 s alerts wait; all are delivered once after it returns", async () => {
  const s = await setup({ ALERT_DRAIN_BUDGET_MS: "2000", ALERT_RETRY_MAX_MS: "2000" });
  try {
    s.sim.down = true;
    for (let i = 0; i < 12; i++) {
      const res = await s.post({ severity: "critical", title: `outage-${i}`, message: "m" });
      assertEquals(res.status, 202);
      await res.body?.cancel();
    }
    await new Promise((r) => setTimeout(r, 10_000));
    assert(s.sim.unavailable > 0, "delivery was attempted while Discord was down");
    assertEquals(s.sim.messages.length, 0);
    const status = await s.server.call("status", {
      headers: { authorization: `Bearer ${s.token}` },
    });
    const details = (await status.json()).dependencies;
    assertEquals(details.alerts.queued >= 12, true, JSON.stringify(details.alerts));
    assert(details.alerts.retrying > 0);
    assertEquals(typeof details.rateLimits, "object");
    assert(details.breakers.some((b: { name: string }) => b.name === "discord"));

    s.sim.down = false;
    const outage = () => s.sim.messages.filter((m) => /outage-\d+/.test(m.content));
    await untilDelivered(s, () => outage().length >= 12, 30_000);
    await s.drain();
    const titles = outage().map((m) => /outage-\d+/.exec(m.content)![0]);
    assertEquals(titles.length, 12);
    assertEquals(new Set(titles).size, 12);
    // The breaker that opened while Discord was down was reported too, once Discord was back.
    await untilDelivered(
      s,
      () => s.sim.messages.some((m) => /Circuit open: discord/.test(m.content)),
      10_000,
    );
    const rows = await queueRows(s);
    assert(rows.every((r) => r.state === "sent"), JSON.stringify(rows));
  } finally {
    await s.close();
  }
});

Deno.test({
  name: "two servers draining one queue at once never send a message twice",
  ...onServer,
  async fn() {
    const tdb = await freshDatabase({ migrated: true });
    const a = await setup({}, { bucketLimit: 100, bucketWindowMs: 1000 }, tdb);
    // The second instance of the same deployment: the same configuration. (With the defaults,
    // a retry it scheduled could wait up to a minute, past this test's rounds.)
    const b = await startTestServer(
      testEnv(tdb.url, { DISCORD_WEBHOOK_URL: a.sim.url, ...ALERT_TEST_LIMITS }),
      { only: ["discord-alert"] },
    );
    try {
      a.sim.down = true;
      for (let i = 0; i < 30; i++) {
        const res = await a.post({ severity: "info", title: `pair-${i}`, message: "m" });
        await res.body?.cancel();
        assertEquals(res.status, 202, `alert ${i} is queued`);
      }
      await new Promise((r) => setTimeout(r, 500));
      a.sim.down = false;
      await new Promise((r) => setTimeout(r, 1200)); // breakers half-open, backoffs due
      const auth = { authorization: `Bearer ${a.token}` };
      for (let round = 0; round < 10; round++) {
        const pair = () => a.sim.messages.filter((m) => /pair-\d+/.test(m.content)).length;
        if (pair() >= 30) break;
        await Promise.all([
          a.drain(),
          b.call("discord-alert/drain", { method: "POST", headers: auth }).then((r) => r.json()),
        ]);
        await new Promise((r) => setTimeout(r, 300));
      }
      const titles = a.sim.messages.map((m) => /pair-\d+/.exec(m.content)?.[0]).filter(Boolean);
      assertEquals(titles.length, 30);
      assertEquals(new Set(titles).size, 30);
    } finally {
      await b.close();
      await a.close();
      await tdb.close();
    }
  },
});
