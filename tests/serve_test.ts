/**
 * The local server (`npm start`) end to end: profiles, boot errors, request ids, fail-fast when
 * the database is cut and recovery, shutdown, and that no log line carries a secret.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { dbPush } from "../local/edge/supabase_cli.ts";
import { freshDatabase, onServer } from "./support/db.ts";
import { startStack } from "./support/stack.ts";
import { JWT_SECRET, serviceToken, testEnv } from "./support/env.ts";
import { settledWithin } from "./support/wait.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { spawnServer, startTestServer, type TestServer } from "./support/server.ts";

Deno.test("status answers 200 through the real server, with a request id, and 404/405 are JSON", async () => {
  const db = await freshDatabase();
  const server = await startTestServer(testEnv(db.url), { only: ["status"] });
  try {
    const ok = await server.call("status", { headers: { "x-request-id": "client-chosen-id-1" } });
    assertEquals(ok.status, 200);
    assertEquals(await ok.json(), { status: "ok" });
    assertEquals(
      ok.headers.get("x-request-id"),
      "client-chosen-id-1",
      "a well-formed caller id is kept",
    );
    const odd = await server.call("status", {
      headers: { "x-request-id": "bad id with spaces <>" },
    });
    await odd.body?.cancel();
    assertMatch(
      odd.headers.get("x-request-id")!,
      /^[0-9a-f-]{36}$/,
      "a malformed caller id is replaced",
    );
    const missing = await server.call("no-such-function");
    assertEquals(missing.status, 404);
    assertEquals((await missing.json()).error.code, "NOT_FOUND");
    assert(missing.headers.get("x-request-id"));
    const wrong = await server.call("status", { method: "DELETE" });
    assertEquals(wrong.status, 405);
    assertEquals((await wrong.json()).error.code, "METHOD_NOT_ALLOWED");
  } finally {
    await server.close();
    await db.close();
  }
});

Deno.test("a cut database gives every request 503 with Retry-After without each one trying the database, and status serves again once it is back", async () => {
  const db = await freshDatabase();
  const target = new URL(db.url);
  const proxy = await startFaultProxy({
    hostname: target.hostname,
    port: Number(target.port || 5432),
  });
  const server = await startTestServer(testEnv(proxy.url(db.url)), { only: ["status"] });
  try {
    assertEquals((await (await server.call("status")).json()).status, "ok");
    proxy.cut();
    // The first request finds the database gone and closes the gate.
    const first = await server.call("status");
    assertEquals(first.status, 503);
    await first.body?.cancel();
    proxy.resetConnections();
    const probesBefore = await probeFailures(server);
    const answers = await settledWithin(
      15_000,
      "20 requests while the database is cut",
      Promise.all(Array.from({ length: 20 }, async () => {
        const res = await server.call("status");
        return {
          status: res.status,
          retryAfter: res.headers.get("retry-after"),
          body: await res.json(),
        };
      })),
    );
    for (const a of answers) {
      assertEquals(a.status, 503);
      assert(Number(a.retryAfter) >= 1, "Retry-After in seconds");
      assertEquals(a.body.status, "fail_safe");
    }
    // Fail fast is counted, not timed: the only connection attempts are the gate's own probes
    // (each a failed probe; one may still be under way), never one per request.
    const probes = (await probeFailures(server)) - probesBefore;
    assert(
      proxy.connections <= probes + 1,
      `${proxy.connections} connection attempts for 20 requests and ${probes} probes`,
    );
    proxy.heal();
    let status = "";
    for (let i = 0; i < 150 && status !== "ok"; i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      status = (await (await server.call("status")).json()).status;
    }
    assertEquals(status, "ok", "status serves again once the database is back, without a restart");
  } finally {
    await server.close();
    await proxy.close();
    await db.close();
  }
});

/** The database gate's failed probes in this outage, as status shows them to an operator. */
async function probeFailures(server: TestServer): Promise<number> {
  const res = await server.call("status", {
    headers: { authorization: `Bearer ${await serviceToken()}` },
  });
  return (await res.json()).dependencies.database.probeFailures;
}

Deno.test("bad configuration names every missing or malformed variable, prints no secret, and only that function fails", async () => {
  const db = await freshDatabase();
  const brokerSecret = "broker-secret-value-never-printed";
  const server = await spawnServer({
    SUPABASE_DB_URL: db.url,
    SUPABASE_JWT_SECRET: JWT_SECRET,
    FRONTEND_URL: "https://app.example.com/not-an-origin",
    BROKER_API_URL: "not a url",
    BROKER_API_SECRET_KEY: brokerSecret,
  });
  try {
    assertEquals(
      (await server.call("status")).status,
      200,
      "a function with a good configuration serves",
    );
    const boot = await server.call("broker-order");
    assertEquals(boot.status, 503);
    assert(boot.headers.get("retry-after"));
    const body = await boot.json();
    assertEquals(body.error.code, "BOOT_ERROR");
    for (const name of ["FRONTEND_URL", "BROKER_API_URL", "BROKER_API_KEY_ID"]) {
      assertStringIncludes(body.error.message, name);
    }
    const printed = server.output.join("\n");
    assertStringIncludes(printed, "broker-order did not boot");
    for (const name of ["FRONTEND_URL", "BROKER_API_URL", "BROKER_API_KEY_ID"]) {
      assertStringIncludes(printed, name);
    }
    for (const value of [brokerSecret, JWT_SECRET, "not-an-origin"]) {
      assert(!printed.includes(value), "no value is printed");
      assert(!body.error.message.includes(value));
    }
  } finally {
    assertEquals(await server.stop("SIGTERM"), 0, "SIGTERM exits 0");
    await db.close();
  }
});

Deno.test("with nothing configured, npm start runs the sandbox, says so first, and serves status", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "sandbox-" });
  const server = await spawnServer({}, { cwd });
  try {
    assertStringIncludes(server.output[0], "SANDBOX");
    const res = await server.call("status");
    assertEquals(res.status, 200);
    assertEquals(await res.json(), { status: "ok" });
    // Among the first lines, shell-ready keys for supabase-js and curl.
    const exports = server.output.slice(0, 5).find((l) => l.startsWith("export SUPABASE_URL="));
    assert(exports, "an export line among the first lines");
    assertMatch(exports, /SUPABASE_ANON_KEY=\S+ USER_JWT=\S+ SERVICE_ROLE_KEY=\S+/);
    // Auth is on the same port, with a JWKS of ES256 keys, and the printed user token works.
    const jwks = await (await fetch(`${server.url}/auth/v1/.well-known/jwks.json`)).json();
    assertEquals(jwks.keys[0].alg, "ES256");
    const userJwt = /USER_JWT=(\S+)/.exec(exports)![1];
    const orders = await server.call("broker-order", {
      headers: { authorization: `Bearer ${userJwt}` },
    });
    assertEquals(orders.status, 200);
    await orders.body?.cancel();
  } finally {
    assertEquals(await server.stop("SIGINT"), 0, "SIGINT exits 0");
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("a function also runs on its own with Deno.serve, as Supabase's runtime runs it", async () => {
  const db = await freshDatabase();
  // Deployed, migrations arrive by `supabase db push`; the function itself runs no DDL.
  await dbPush(db.url);
  const server = await spawnServer(testEnv(db.url), {
    entry: "functions/status/index.ts",
    ready: /"msg":"listening","url":"(http:\/\/[\d.:]+)\/status"/,
  });
  try {
    const res = await fetch(`${server.url.replace("0.0.0.0", "127.0.0.1")}/status`);
    assertEquals(res.status, 200);
    assertEquals(await res.json(), { status: "ok" });
  } finally {
    assertEquals(await server.stop("SIGTERM"), 0);
    await db.close();
  }
});

Deno.test("no log line of the server carries a secret or an Authorization value", async () => {
  const db = await freshDatabase();
  const server = await startTestServer(testEnv(db.url), { only: ["status"] });
  const token = await serviceToken();
  try {
    await (await server.call("status", { headers: { authorization: `Bearer ${token}` } })).body
      ?.cancel();
    await (await server.call("status", {
      headers: { authorization: "Bearer garbage.token.value" },
    })).body?.cancel();
  } finally {
    await server.close();
    await db.close();
  }
  const all = server.logs.join("\n");
  assert(server.logs.length >= 2);
  for (const secret of [JWT_SECRET, token, "garbage.token.value"]) {
    assert(!all.includes(secret), `a log line carries ${secret.slice(0, 12)}…`);
  }
});

Deno.test({
  name: "SIGTERM stops accepting, finishes the request in flight, and exits 0",
  ...onServer,
  async fn() {
    const stack = await startStack({ processes: 1 });
    try {
      const [server] = stack.processes;
      stack.sims.broker.delayMs = 2500; // the order is in flight at the broker when SIGTERM lands
      const inFlight = server.call("broker-order", {
        method: "POST",
        headers: {
          authorization: `Bearer ${await stack.userToken()}`,
          "idempotency-key": "shutdown-order-1",
          "content-type": "application/json",
        },
        body: JSON.stringify({
          symbol: "AAPL",
          side: "buy",
          type: "market",
          qty: "1",
          time_in_force: "day",
        }),
      });
      let answered = false;
      const answer = inFlight.finally(() => answered = true);
      while (stack.sims.broker.placed === 0) await new Promise((r) => setTimeout(r, 20));
      const exit = server.stop("SIGTERM");
      // Stops accepting: a new connection is refused while the order is still in flight.
      const port = Number(new URL(server.url).port);
      let accepting = true;
      for (let i = 0; i < 100 && accepting; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          await new Promise((r) => setTimeout(r, 20));
        } catch {
          accepting = false;
        }
      }
      assertEquals(accepting, false, "SIGTERM closed the listener");
      assertEquals(answered, false, "…while the request in flight was still being served");
      const res = await answer;
      assertEquals(res.status, 201, "the in-flight order was answered");
      assertEquals(await exit, 0);
      const [{ n }] = await stack
        .sql`select count(*)::int as n from orders where status <> 'pending_confirmation'`;
      assertEquals(n, 1, "and recorded before the process exited");
      const refused = await fetch(`${server.url}/functions/v1/status`).then(
        () => "answered",
        () => "refused",
      );
      assertEquals(refused, "refused", "a stopped server accepts nothing");
    } finally {
      await stack.close();
    }
  },
});
