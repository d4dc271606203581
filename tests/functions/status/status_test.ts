/**
 * status through the real local server, over a real socket: `200 {"status":"ok"}` when the
 * database answers; `503 {"status":"fail_safe"}` with `Retry-After` when it does not (refused
 * connections, or a database that takes the connection and never answers), and `200` again once
 * it is back, without a restart; each dependency's state only for a service caller (a user's
 * token is no error: status serves everyone, it just shows that caller nothing more).
 */
import { assert, assertEquals } from "@std/assert";
import { freshDatabase, type TestDatabase } from "../../support/db.ts";
import { serviceToken, testEnv, userToken } from "../../support/env.ts";
import { type FaultProxy, startFaultProxy } from "../../support/fault_proxy.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";

/** The status function alone, on a fresh migrated database reached through a fault proxy. */
async function withStatus(fn: (server: TestServer, proxy: FaultProxy) => Promise<void>) {
  const db: TestDatabase = await freshDatabase({ migrated: true });
  const target = new URL(db.url);
  const proxy = await startFaultProxy({
    hostname: target.hostname,
    port: Number(target.port || 5432),
  });
  const server = await startTestServer(testEnv(proxy.url(db.url)), { only: ["status"] });
  try {
    await fn(server, proxy);
  } finally {
    await server.close();
    await proxy.close();
    await db.close();
  }
}

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & {
    dependencies?: { database: Record<string, unknown> } & Record<string, unknown>;
  };
}

/** GET /functions/v1/status over the socket. */
async function status(server: TestServer, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${server.url}/functions/v1/status`, { headers });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** Asks status until it says ok, at most `tries` times 100 ms apart; the last answer. */
async function untilOk(server: TestServer, tries = 100): Promise<Answer> {
  let last = await status(server);
  for (let i = 0; i < tries && last.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    last = await status(server);
  }
  return last;
}

Deno.test("status answers 200 {status: ok} when the database answers, not cached, and only that", () =>
  withStatus(async (server, proxy) => {
    proxy.resetRoundTrips();
    const ok = await status(server);
    assertEquals(ok.status, 200);
    assertEquals(ok.body, { status: "ok" }, "nothing but the status for an anonymous caller");
    assertEquals(ok.headers.get("cache-control"), "no-store");
    assertEquals(ok.headers.get("retry-after"), null);
    assert(proxy.roundTrips >= 1, "the answer comes from asking the database");
  }));

for (const fault of ["cut", "stall"] as const) {
  const what = fault === "cut" ? "refuses connections" : "takes connections and never answers";
  Deno.test(`status answers 503 fail_safe with Retry-After while the database ${what}, and 200 again once it is back`, () =>
    withStatus(async (server, proxy) => {
      assertEquals((await status(server)).status, 200);
      proxy[fault]();
      const down = await status(server);
      assertEquals(down.status, 503);
      assertEquals(down.body, { status: "fail_safe", reason: "database unavailable" });
      assert(Number(down.headers.get("retry-after")) >= 1, "Retry-After in whole seconds");
      assertEquals(down.headers.get("cache-control"), "no-store");

      // The operator sees why: the database's state, its failures and when it is tried next.
      const operator = await status(server, { authorization: `Bearer ${await serviceToken()}` });
      assertEquals(operator.status, 503);
      assertEquals(operator.body.status, "fail_safe");
      const database = operator.body.dependencies!.database;
      assertEquals(database.state, "down");
      assertEquals(database.latencyMs, null);
      assert((database.failures as number) >= 1, JSON.stringify(database));
      assert(typeof database.nextProbeAt === "string", JSON.stringify(database));
      assert(Number(operator.headers.get("retry-after")) >= 1);

      proxy.heal();
      const back = await untilOk(server);
      assertEquals(back.status, 200, "status serves again once the database is back");
      assertEquals(back.body, { status: "ok" });
    }));
}

Deno.test("status shows each dependency's state to a service caller only; a user's token sees the status alone", () =>
  withStatus(async (server) => {
    const operator = await status(server, { authorization: `Bearer ${await serviceToken()}` });
    assertEquals(operator.status, 200);
    const body = operator.body;
    assertEquals(body.status, "ok");
    const deps = body.dependencies!;
    assertEquals(deps.database.state, "up");
    assertEquals(typeof deps.database.latencyMs, "number");
    assertEquals(typeof deps.database.retries, "number");
    assertEquals(deps.database.failures, 0);
    assert(Array.isArray(deps.breakers), "each circuit breaker");
    assertEquals(typeof (deps.alerts as Record<string, unknown>), "object", "queued alerts");
    assertEquals(typeof deps.rateLimits, "object", "rate-limit counters");

    const user = await status(server, { authorization: `Bearer ${await userToken()}` });
    assertEquals(user.status, 200);
    assertEquals(user.body, { status: "ok" }, "a user token sees no details");
    const anonymous = await status(server);
    assertEquals(anonymous.body, { status: "ok" });
  }));
