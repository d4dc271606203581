/**
 * discord-alert across instances (issue 14): two `deno run local/serve.ts` processes over one
 * Postgres server, the sandbox's Discord simulator enforcing 5 requests per 2 s with
 * `X-RateLimit-*` headers and 429s, and its Slack-style fallback webhook. Each test drives the
 * instances as our services and a scheduler (`POST /drain`) would.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { onServer } from "../../support/db.ts";
import { type Stack, startStack } from "../../support/stack.ts";
import type { SpawnedServer } from "../../support/server.ts";

interface Fleet {
  stack: Stack;
  a: SpawnedServer;
  b: SpawnedServer;
  /** Posts an alert to instance `i % 2`; resolves to the status and body. */
  post(i: number, body: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  /** `POST /drain` on both instances at once, as a scheduler on each would. */
  drainBoth(): Promise<void>;
  /** `status`'s service-role details from instance `i % 2`. */
  details(i: number): Promise<Record<string, Record<string, unknown>>>;
}

async function withFleet(env: Record<string, string>, fn: (f: Fleet) => Promise<void>) {
  const stack = await startStack({
    processes: 2,
    env: { DB_QUERY_TIMEOUT_MS: "5000", ALERT_GROUP_WAIT_MS: "1000", ...env },
  });
  try {
    const [a, b] = stack.processes;
    const auth = { authorization: `Bearer ${await stack.serviceToken()}` };
    const pick = (i: number) => (i % 2 ? b : a);
    await fn({
      stack,
      a,
      b,
      async post(i, body) {
        const res = await pick(i).call("discord-alert", {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return { status: res.status, body: await res.json() };
      },
      async drainBoth() {
        await Promise.all([a, b].map(async (s) => {
          const res = await s.call("discord-alert/drain", { method: "POST", headers: auth });
          assertEquals(res.status, 200, await res.clone().text());
          await res.body?.cancel();
        }));
      },
      async details(i) {
        const res = await pick(i).call("status", { headers: auth });
        return (await res.json()).dependencies;
      },
    });
  } finally {
    await stack.close();
  }
}

/** Calls `/drain` on both instances every `everyMs` until `done()`, or fails after `timeoutMs`. */
async function schedulerUntil(f: Fleet, done: () => boolean, timeoutMs: number, everyMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("not done in time");
    await new Promise((r) => setTimeout(r, everyMs));
    if (!done()) await f.drainBoth();
  }
}

Deno.test({
  name:
    "80 concurrent alerts over two instances: all 202, 61 messages (one counting 20), at most one 429",
  ...onServer,
  fn: () =>
    withFleet({}, async (f) => {
      const discord = f.stack.sims.discord;
      const bodies = Array.from({ length: 80 }, (_, i) =>
        i % 4 === 3
          ? {
            severity: "critical",
            title: "Broker API failing",
            message: "5xx from the broker",
            dedupKey: "fleet-broker-5xx",
          }
          : {
            severity: i % 3 === 0 ? "warning" : "info",
            title: `fleet-${i}`,
            message: `alert number ${i}`,
          });
      const answers = await Promise.all(bodies.map((body, i) => f.post(i, body)));
      assertEquals(
        answers.filter((a) => a.status !== 202).map((a) => [a.status, a.body]),
        [],
        "every alert is accepted (none shed with 503)",
      );
      const keyed = answers.filter((_, i) => i % 4 === 3);
      assertEquals(keyed.length, 20);
      assertEquals(new Set(keyed.map((a) => a.body.id)).size, 1, "one row for the key");
      assertEquals(keyed.filter((a) => a.body.coalesced === false).length, 1);

      await schedulerUntil(f, () => discord.messages.length >= 61, 120_000, 3000);
      await new Promise((r) => setTimeout(r, 1500)); // nothing more follows
      assertEquals(discord.messages.length, 61);
      const titles = discord.messages.map((m) =>
        /fleet-\d+|Broker API failing/.exec(m.content)![0]
      );
      assertEquals(new Set(titles).size, 61, "each delivered once");
      const grouped = discord.messages.filter((m) => m.content.includes("Broker API failing"));
      assertEquals(grouped.length, 1);
      assertMatch(grouped[0].content, /occurred 20 times/);
      assert(discord.rateLimited <= 1, `${discord.rateLimited} 429s from Discord`);
      // Every alert is also a structured log line, on the instance that took it.
      const logged = [...f.a.output, ...f.b.output]
        .filter((line) => line.includes('"msg":"alert"'))
        .map((line) => JSON.parse(line));
      assertEquals(logged.length, 80);
      assertEquals(logged.filter((l) => l.coalesced).length, 19);
      assertEquals(logged.filter((l) => l.level === "error").length, 20, "critical → error");
      const rows = await f.stack.sql<{ state: string; n: number }[]>`
        select state, count(*)::int as n from internal.alerts group by state`;
      assertEquals(rows.map((r) => [r.state, r.n]), [["sent", 61]]);
    }),
});

Deno.test({
  name:
    "a deleted webhook: a handful of requests reach it, one fallback notice, status names the cause, the kept alerts go out once it works",
  ...onServer,
  fn: () =>
    withFleet({ ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS: "4" }, async (f) => {
      const { discord, fallback } = f.stack.sims;
      discord.deleted = true;
      const first = await Promise.all(
        Array.from(
          { length: 20 },
          (_, i) => f.post(i, { severity: "warning", title: `kept-${i}`, message: "m" }),
        ),
      );
      assert(first.every((a) => a.status === 202));
      await fallback.waitForMessages(1, 15_000);
      // More alerts and scheduler runs while it stays deleted: they are kept, not sent.
      for (let round = 0; round < 3; round++) {
        const more = await Promise.all(
          Array.from(
            { length: 10 },
            (_, i) =>
              f.post(i, {
                severity: "warning",
                title: `kept-${20 + round * 10 + i}`,
                message: "m",
              }),
          ),
        );
        assert(more.every((a) => a.status === 202));
        await f.drainBoth();
      }
      assertEquals(discord.messages.length, 0);
      // Both instances' first sends may cross before either sees the 404; then one probe per
      // interval for the whole fleet.
      assert(discord.requests <= 5, `${discord.requests} requests reached the deleted webhook`);
      assertEquals(fallback.messages.length, 1, fallback.messages.map((m) => m.text).join("\n"));
      assertMatch(fallback.messages[0].text, /Discord alert delivery is broken/);
      assertMatch(fallback.messages[0].text, /Unknown Webhook/);
      assertMatch(fallback.messages[0].text, /alert\(s\) are kept in the queue/);

      for (const i of [0, 1]) {
        const { alerts } = await f.details(i);
        const delivery = alerts.delivery as Record<string, unknown>;
        assertEquals(delivery.usable, false);
        assertMatch(String(delivery.unusableReason), /404 \(code 10015\): Unknown Webhook/);
        assertEquals([alerts.queued, alerts.dead], [50, 0], "kept, none dead-lettered");
      }

      discord.deleted = false;
      const kept = () => discord.messages.filter((m) => /kept-\d+/.test(m.content)).length;
      await schedulerUntil(f, () => kept() >= 50, 90_000, 1000);
      await new Promise((r) => setTimeout(r, 1000));
      const titles = discord.messages.map((m) => /kept-\d+/.exec(m.content)?.[0]);
      assertEquals(titles.length, 50);
      assertEquals(new Set(titles).size, 50);
      assert(discord.rateLimited <= 1, `${discord.rateLimited} 429s`);
      const { alerts } = await f.details(1);
      assertEquals((alerts.delivery as Record<string, unknown>).usable, true);
      assertEquals(alerts.queued, 0);
      assertEquals(fallback.messages.length, 1, "the notice was not repeated");
    }),
});

Deno.test({
  name:
    "Discord down longer than ALERT_FALLBACK_AFTER_SECONDS: one notice and the critical alerts reach the fallback channel, then Discord gets them all",
  ...onServer,
  fn: () =>
    withFleet({
      ALERT_FALLBACK_AFTER_SECONDS: "4",
      ALERT_RETRY_BASE_MS: "200",
      ALERT_RETRY_MAX_MS: "1000",
    }, async (f) => {
      const { discord, fallback } = f.stack.sims;
      discord.down = true;
      const posted = await Promise.all([
        f.post(0, { severity: "critical", title: "crit-db", message: "replica lost" }),
        f.post(1, { severity: "critical", title: "crit-disk", message: "disk full" }),
        f.post(0, { severity: "info", title: "info-deploy", message: "deployed" }),
        f.post(1, { severity: "warning", title: "warn-latency", message: "p99 up" }),
        f.post(0, {
          severity: "critical",
          title: "crit-broker",
          message: "broker 5xx",
          dedupKey: "broker-5xx",
        }),
      ]);
      assert(posted.every((a) => a.status === 202));
      // Delivery is being retried in the background (the failing period started with it).
      await new Promise((r) => setTimeout(r, 1000));
      assert(discord.unavailable > 0, "delivery was attempted");
      assertEquals(fallback.messages.map((m) => m.text), [], "not before the threshold");

      const forwarded = () => fallback.messages.filter((m) => /crit-\w+/.test(m.text));
      await schedulerUntil(f, () => forwarded().length >= 3, 30_000, 1000);
      await new Promise((r) => setTimeout(r, 500));
      const titles = forwarded().map((m) => /crit-\w+/.exec(m.text)![0]).sort();
      assertEquals(titles, ["crit-broker", "crit-db", "crit-disk"]);
      assert(!fallback.messages.some((m) => /info-deploy|warn-latency/.test(m.text)));
      const notices = fallback.messages.filter((m) =>
        /Discord alert delivery is broken/.test(m.text)
      );
      assertEquals(notices.length, 1);
      assertMatch(notices[0].text, /failing since/);
      assertEquals(discord.messages.length, 0);
      const { alerts } = await f.details(0);
      assert((alerts.delivery as Record<string, unknown>).failingSince !== null);

      discord.down = false;
      const ours = () =>
        discord.messages.filter((m) => /crit-\w+|info-deploy|warn-latency/.test(m.content));
      await schedulerUntil(f, () => ours().length >= 5, 60_000, 1500);
      await new Promise((r) => setTimeout(r, 500));
      assertEquals(ours().length, 5, "every alert also reaches Discord, once");
      assertEquals(fallback.messages.filter((m) => /crit-\w+/.test(m.text)).length, 3);
    }),
});
