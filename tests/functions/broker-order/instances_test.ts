/**
 * broker-order across server processes on one Postgres server: one key places one order however
 * many instances see it, a dead instance's claim is taken over, and the per-user rate limit is
 * shared. Each test spawns real `deno run local/serve.ts` processes.
 */
import { assert, assertEquals } from "@std/assert";
import { onServer } from "../../support/db.ts";
import { type SpawnedServer, spawnServer } from "../../support/server.ts";
import { MARKET, trader, until, withWorld, type World } from "./harness.ts";

async function withInstances(
  count: number,
  extra: Record<string, string>,
  fn: (servers: SpawnedServer[], w: World) => Promise<void>,
) {
  await withWorld(async (w) => {
    const servers: SpawnedServer[] = [];
    try {
      // One after the other: the first applies the migrations, the second finds them applied.
      for (let i = 0; i < count; i++) servers.push(await spawnServer(w.env(extra)));
      await fn(servers, w);
    } finally {
      await Promise.all(servers.map((s) => s.stop("SIGKILL")));
    }
  });
}

Deno.test({
  name:
    "30 concurrent identical requests with one key over two instances place one order; each answer is it or 409",
  ...onServer,
  fn: () =>
    withInstances(2, {}, async ([a, b], w) => {
      w.broker.delayMs = 300; // keep the first in flight while the others arrive
      const userId = crypto.randomUUID();
      const viaA = await trader(a.call, userId);
      const viaB = await trader(b.call, userId);
      const key = "concurrent-key-0001";
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? viaA : viaB).order(MARKET, key)),
      );
      const bodies = await Promise.all(answers.map((r) => r.text()));
      const statuses = answers.map((r) => r.status);
      assertEquals(w.broker.placed, 1, "exactly one order at the broker");
      assertEquals(w.broker.calls.filter((c) => c.startsWith("POST")).length, 1);
      assert(statuses.every((s) => s === 201 || s === 409), statuses.join(","));
      const placed = bodies.filter((_, i) => statuses[i] === 201);
      assert(placed.length >= 1, "the first request answered the order");
      assert(placed.every((body) => body === placed[0]), "every 201 is the same order");
      const order = JSON.parse(placed[0]);
      assertEquals(order.brokerOrderId, w.broker.orders[0].id);
      assertEquals(order.clientOrderId, w.broker.orders[0].client_order_id);
      for (const conflict of bodies.filter((_, i) => statuses[i] === 409)) {
        assertEquals(JSON.parse(conflict).error.code, "IDEMPOTENCY_KEY_IN_USE");
      }
      // Afterwards, from either instance: the stored answer.
      const replay = await viaA.order(MARKET, key);
      assertEquals(replay.status, 201);
      assertEquals(replay.headers.get("idempotent-replayed"), "true");
      assertEquals(await replay.text(), placed[0]);
      assertEquals((await (await viaB.list()).json()).orders.length, 1);
    }),
});

Deno.test({
  name:
    "a request that died mid-flight is taken over after its lock by the retry, which finds the order by lookup",
  ...onServer,
  fn: () =>
    withInstances(2, { IDEMPOTENCY_LOCK_SECONDS: "1" }, async ([doomed, survivor], w) => {
      const userId = crypto.randomUUID();
      const key = "dies-mid-flight-01";
      // The broker takes the order but holds its answer; the instance dies before it comes.
      w.broker.delayMs = 60_000;
      const first = (await trader(doomed.call, userId)).order(MARKET, key).catch(() => null);
      await until(() => w.broker.placed === 1, 15_000, "the order to reach the broker");
      await doomed.stop("SIGKILL");
      assertEquals(await first, null, "the client saw the connection drop");
      w.broker.delayMs = 0;

      const t = await trader(survivor.call, userId);
      let retry = await t.order(MARKET, key);
      const started = Date.now();
      while (retry.status === 409 && Date.now() - started < 5_000) {
        await new Promise((r) => setTimeout(r, 250));
        retry = await t.order(MARKET, key);
      }
      assertEquals(retry.status, 201);
      const order = await retry.json();
      assertEquals(order.brokerOrderId, w.broker.orders[0].id);
      assertEquals(w.broker.placed, 1, "never a second order");
      assertEquals(w.broker.calls.filter((c) => c.startsWith("POST")).length, 1);
      assert(
        w.broker.calls.some((c) => c.startsWith("GET /v2/orders:by_client_order_id 200")),
        "resolved by lookup",
      );
      const replay = await t.order(MARKET, key);
      assertEquals(replay.headers.get("idempotent-replayed"), "true");
      assertEquals((await replay.json()).id, order.id);
    }),
});

Deno.test({
  name:
    "the per-user order limit holds across two instances, with RateLimit fields and 429 + Retry-After",
  ...onServer,
  fn: () =>
    withInstances(
      2,
      { ORDER_RATE_LIMIT: "5", ORDER_RATE_WINDOW_SECONDS: "60" },
      async ([a, b], w) => {
        const userId = crypto.randomUUID();
        const viaA = await trader(a.call, userId);
        const viaB = await trader(b.call, userId);
        const answers: Response[] = [];
        for (let i = 0; i < 8; i++) answers.push(await (i % 2 ? viaA : viaB).order(MARKET));
        const statuses = answers.map((r) => r.status);
        assertEquals(statuses, [201, 201, 201, 201, 201, 429, 429, 429]);
        for (const [i, res] of answers.entries()) {
          assertEquals(res.headers.get("ratelimit-policy"), '"orders";q=5;w=60');
          const m = /^"orders";r=(\d+);t=(\d+)$/.exec(res.headers.get("ratelimit") ?? "");
          assert(m, `RateLimit field on answer ${i}: ${res.headers.get("ratelimit")}`);
          assertEquals(Number(m[1]), Math.max(0, 4 - i));
          assert(Number(m[2]) > 0 && Number(m[2]) <= 60);
          await res.body?.cancel();
        }
        const limited = answers[5];
        const retryAfter = Number(limited.headers.get("retry-after"));
        assert(retryAfter > 0 && retryAfter <= 60, `Retry-After ${retryAfter}`);
        const again = await viaA.order(MARKET);
        assertEquals(again.status, 429);
        assertEquals((await again.json()).error.code, "RATE_LIMITED");
        assertEquals(w.broker.placed, 5, "limited requests never reach the broker");
        // Another user has their own quota.
        assertEquals((await (await trader(b.call)).order(MARKET)).status, 201);
      },
    ),
});
