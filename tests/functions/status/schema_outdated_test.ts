/**
 * SCHEMA_OUTDATED over HTTP, in the deployed shape: functions run on their own
 * (`deno run functions/<name>/index.ts`, as the Edge Runtime runs them, never running DDL) over a
 * database that has every migration but the newest. They answer
 * `503 {"error": {"code": "SCHEMA_OUTDATED"}}` with `Retry-After`, log the missing version, are
 * not in an outage (no connection failure counted), and serve as soon as the migration arrives,
 * in the same process. tests/shared/db/schema_test.ts checks the same at the Database level;
 * tests/edge/check.ts with the bundles on a hosted-like project.
 */
import postgres from "postgres";
import { assert, assertEquals } from "@std/assert";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { SCHEMA_VERSION } from "../../../shared/db/schema_version.ts";
import { freshDatabase } from "../../support/db.ts";
import { serviceToken, testEnv, userToken } from "../../support/env.ts";
import { type SpawnedServer, spawnServer } from "../../support/server.ts";

/** `functions/<name>/index.ts` on its own, as deployed; its base URL is `url`. */
function standalone(name: string, env: Record<string, string>): Promise<SpawnedServer> {
  return spawnServer({ ...env, HOST: "127.0.0.1" }, {
    entry: `functions/${name}/index.ts`,
    ready: new RegExp(`"url":"(http://127\\.0\\.0\\.1:\\d+)/${name}"`),
  });
}

interface Answer {
  status: number;
  retryAfter: string | null;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function get(url: string, token?: string): Promise<Answer> {
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() };
}

Deno.test("a function over a database lacking the newest migration answers 503 SCHEMA_OUTDATED with Retry-After, logs the missing version, and serves once it arrives, without a restart", async () => {
  const migrations = await loadMigrations();
  const newest = migrations.at(-1)!;
  assertEquals(newest.version, SCHEMA_VERSION, "the newest migration is the one the code needs");
  const db = await freshDatabase();
  const admin = postgres(db.url, { max: 1, onnotice: () => {} });
  const servers: SpawnedServer[] = [];
  try {
    await migrate(admin, migrations.slice(0, -1));
    const env = testEnv(db.url, {
      DB_SCHEMA_RECHECK_MS: "200",
      BROKER_API_URL: "http://127.0.0.1:9",
      BROKER_API_KEY_ID: "key-id",
      BROKER_API_SECRET_KEY: "secret-key",
    });
    const [status, orders] = await Promise.all([
      standalone("status", env),
      standalone("broker-order", env),
    ]);
    servers.push(status, orders);
    const statusUrl = `${status.url}/status`;
    const ordersUrl = `${orders.url}/broker-order`;
    const user = await userToken();

    // status: fail-safe, and the reason is the schema, not an outage.
    const down = await get(statusUrl);
    assertEquals(down.status, 503);
    assert(Number(down.retryAfter) >= 1, "503 carries Retry-After in seconds");
    assertEquals(down.body.status, "fail_safe");
    assertEquals(down.body.reason, "schema outdated");
    assertEquals(down.body.error.code, "SCHEMA_OUTDATED");
    assert(String(down.body.error.message).includes(SCHEMA_VERSION), down.body.error.message);
    const operator = await get(statusUrl, await serviceToken());
    assertEquals(operator.body.dependencies.database.state, "schema_outdated");
    assertEquals(operator.body.dependencies.database.missingMigration, SCHEMA_VERSION);
    assertEquals(operator.body.dependencies.database.failures, 0, "not an outage");

    // A user route: the contract's error body.
    const refused = await get(ordersUrl, user);
    assertEquals(refused.status, 503);
    assert(Number(refused.retryAfter) >= 1, "503 carries Retry-After in seconds");
    assertEquals(refused.body.error.code, "SCHEMA_OUTDATED");

    // Each log names the missing version.
    for (const server of servers) {
      const line = server.output.find((l) => l.includes("schema is outdated"));
      assert(line, `no schema log line in:\n${server.output.join("\n")}`);
      assertEquals(JSON.parse(line).missingMigration, SCHEMA_VERSION, line);
    }
    // Nothing was created by the functions themselves: the newest migration is still missing.
    const [{ n }] = await admin`select count(*)::int as n
      from supabase_migrations.schema_migrations where version = ${SCHEMA_VERSION}`;
    assertEquals(n, 0);

    // The migration arrives (as `supabase db push` brings it; it applies exactly that one, so
    // no function applied it): the same processes serve.
    assertEquals(await migrate(admin, migrations), [SCHEMA_VERSION]);
    let last = down;
    for (let i = 0; i < 100 && last.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      last = await get(statusUrl);
    }
    assertEquals(last, { status: 200, retryAfter: null, body: { status: "ok" } });
    let listed = refused;
    for (let i = 0; i < 100 && listed.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      listed = await get(ordersUrl, user);
    }
    assertEquals(listed.status, 200, JSON.stringify(listed.body));
  } finally {
    for (const server of servers) await server.stop();
    await admin.end();
    await db.close();
  }
});
