/**
 * What discord-alert sends: neutralized text, content within Discord's limits, and a client
 * that follows Discord's rate-limit headers and classifies its answers (against the simulator).
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import {
  DiscordClient,
  DiscordRateLimited,
  DiscordRejected,
} from "../../../shared/alerts/discord_client.ts";
import {
  DISCORD_LIMITS,
  neutralize,
  renderAlert,
  truncate,
} from "../../../shared/alerts/discord_text.ts";
import { UpstreamUnavailable } from "../../../shared/errors.ts";
import { parseMentions, startDiscordSimulator } from "../../../local/sandbox/discord.ts";

Deno.test("neutralize() leaves no mention Discord would parse and no markdown link", () => {
  const out = neutralize(
    "@everyone @here <@1234> <@!1234> <@&5678> <#9012> [bank](https://evil.example) **x** ||s||",
  );
  assertEquals(parseMentions(out), []);
  assert(!/(?<!\\)\[/.test(out), out);
  assert(!/(?<!\\)\*\*/.test(out), out);
  assert(!/(?<!\\)\|\|/.test(out), out);
  assertStringIncludes(out, "https://evil.example"); // the real target stays visible
});

Deno.test("neutralize() escapes line-start list and heading markers", () => {
  assertEquals(neutralize("# h\n- a\n1. b\n-# small"), "\\# h\n\\- a\n1\\. b\n-\\# small");
});

Deno.test("truncate() ends with an ellipsis and never splits a surrogate pair", () => {
  assertEquals(truncate("abcdef", 4), "abc…");
  assertEquals(truncate("abc", 4), "abc");
  const cut = truncate("ab😀cd", 4); // the emoji would straddle the cut
  assertEquals(cut, "ab…");
  assert(!/[\uD800-\uDBFF]$/.test(cut.slice(0, -1)));
});

Deno.test("renderAlert() fits 2000 characters whatever the input and says how many occurred", () => {
  const content = renderAlert({
    severity: "critical",
    title: "t".repeat(1000),
    message: "m".repeat(20_000),
    count: 7,
    firstSeenAt: Date.UTC(2026, 10, 24),
  });
  assert(content.length <= DISCORD_LIMITS.content, `${content.length}`);
  assert(content.startsWith("🔴 **CRITICAL** · "));
  assertStringIncludes(content, "…");
  assertStringIncludes(content, "(occurred 7 times since <t:");
  const repeat = renderAlert({
    severity: "info",
    title: "x",
    message: "y",
    count: 1,
    repeat: true,
  });
  assertStringIncludes(repeat, "(occurred 1 more time since the last message)");
});

Deno.test("the client always sends allowed_mentions {parse: []} and cuts content to 2000", async () => {
  const sim = await startDiscordSimulator({ bucketLimit: 10 });
  try {
    const client = new DiscordClient({ webhookUrl: sim.url, timeoutMs: 2000 });
    const { id } = await client.execute("@everyone " + "z".repeat(3000));
    assertEquals(id, sim.messages[0].id);
    assertEquals(sim.messages[0].allowedMentions, { parse: [] });
    assertEquals(sim.messages[0].pinged, false);
    assertEquals(sim.messages[0].content.length, 2000);
  } finally {
    await sim.close();
  }
});

Deno.test("the client waits for the bucket to reset once X-RateLimit-Remaining reaches 0", async () => {
  const sim = await startDiscordSimulator({ bucketLimit: 2, bucketWindowMs: 600 });
  try {
    const client = new DiscordClient({ webhookUrl: sim.url, timeoutMs: 2000 });
    await client.execute("one");
    assertEquals(client.waitMs(), 0);
    await client.execute("two");
    assert(client.waitMs() > 0, "remaining is 0: the client knows it must wait");
    const started = Date.now();
    await client.execute("three");
    assert(Date.now() - started >= 400, "the third send waited for the reset");
    assertEquals(sim.rateLimited, 0);
    assertEquals(sim.messages.length, 3);
  } finally {
    await sim.close();
  }
});

Deno.test("the client classifies Discord's answers: 429, other 4xx, 5xx, unreachable", async () => {
  const sim = await startDiscordSimulator({ bucketLimit: 10 });
  try {
    const client = new DiscordClient({ webhookUrl: sim.url, timeoutMs: 2000 });
    sim.rateLimitGlobally(300);
    const limited = await assertRejects(() => client.execute("a"), DiscordRateLimited);
    assertEquals((limited as DiscordRateLimited).global, true);
    assert(client.waitMs() > 200, "a global 429 pauses every send");
    sim.failNext(1, 400);
    await assertRejects(() => client.execute("b"), DiscordRejected, "400");
    sim.down = true;
    await assertRejects(() => client.execute("c"), UpstreamUnavailable, "503");
    sim.down = false;
    const wrongToken = new DiscordClient({ webhookUrl: sim.url + "x", timeoutMs: 2000 });
    await assertRejects(() => wrongToken.execute("d"), DiscordRejected, "Invalid Webhook Token");
  } finally {
    await sim.close();
  }
  const gone = new DiscordClient({ webhookUrl: sim.url, timeoutMs: 1000 });
  await assertRejects(() => gone.execute("e"), UpstreamUnavailable, "unreachable");
});

Deno.test("the simulator refuses what Discord refuses: content over 2000, empty, embeds too big", async () => {
  const sim = await startDiscordSimulator({ bucketLimit: 10 });
  try {
    const post = async (body: unknown) => {
      const res = await fetch(`${sim.url}?wait=true`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return {
        status: res.status,
        body: await res.json(),
        limit: res.headers.get("x-ratelimit-limit"),
      };
    };
    const long = await post({ content: "x".repeat(2001) });
    assertEquals([long.status, long.body.code, long.limit], [400, 50035, "10"]);
    assertEquals((await post({ content: "" })).body.code, 50006);
    assertEquals((await post({ embeds: [{ description: "x".repeat(4097) }] })).status, 400);
    assertEquals(
      (await post({
        embeds: [{ title: "t", description: "x".repeat(4096) }, { description: "y".repeat(2000) }],
      })).status,
      400,
    );
    assertEquals(sim.messages.length, 0);
  } finally {
    await sim.close();
  }
});

Deno.test("the simulator prints one [discord-sim] line per message it receives", async () => {
  const lines: string[] = [];
  const sim = await startDiscordSimulator({ print: (line) => lines.push(line) });
  try {
    const client = new DiscordClient({ webhookUrl: sim.url, timeoutMs: 2000 });
    await client.execute("🔴 **CRITICAL** · Disk full\nOn db-1");
    assertEquals(lines, ["[discord-sim] message 1: 🔴 **CRITICAL** · Disk full ⏎ On db-1"]);
  } finally {
    await sim.close();
  }
});
