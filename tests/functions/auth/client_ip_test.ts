/**
 * Clients are told apart by the connection's address when no proxy header is present (issue 12,
 * finding 7): the local server passes the address on, and one client's failed logins never lock
 * out another.
 */
import postgres from "postgres";
import { assertEquals } from "@std/assert";
import authFunction from "../../../functions/auth/index.ts";
import { bootFunction } from "../../../shared/platform/boot.ts";
import { createLogger } from "../../../shared/logger.ts";
import { createPlatform } from "../../../shared/platform/platform.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { startSupabaseAuthSimulator } from "../../../local/sandbox/supabase_auth.ts";
import { freshDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv } from "../../support/env.ts";
import { startTestServer } from "../../support/server.ts";

const ANON_KEY = "test-anon-key-0123456789abcdef";

async function withAuth(
  fn: (env: Record<string, string>, sql: postgres.Sql) => Promise<void>,
) {
  const sim = await startSupabaseAuthSimulator({ anonKey: ANON_KEY, users: [] });
  const db = await freshDatabase({ migrated: true });
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    await fn(testEnv(db.url, { SUPABASE_URL: sim.url, SUPABASE_ANON_KEY: ANON_KEY }), sql);
  } finally {
    await sql.end();
    await db.close();
    await sim.close();
  }
}

const failedLogin = (i: number) =>
  new Request("http://local/functions/v1/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json", origin: FRONTEND },
    body: JSON.stringify({ email: `nobody-${i}@example.com`, password: "wrong" }),
  });

const from = (hostname: string): Deno.ServeHandlerInfo => ({
  remoteAddr: { transport: "tcp", hostname, port: 40_000 },
  completed: Promise.resolve(),
});

Deno.test("one client's failed logins lock out that client only, told apart by the connection's address", async () => {
  await withAuth(async (env) => {
    const platform = await createPlatform(env, {
      log: createLogger({ write: () => {} }),
      onConnect: async (sql) => void await migrate(sql, await loadMigrations()),
    });
    try {
      const { fetch } = await bootFunction(authFunction, platform);
      let last = 0;
      for (let i = 0; i < 21; i++) {
        const res = await fetch(failedLogin(i), from("203.0.113.1"));
        last = res.status;
        await res.body?.cancel();
      }
      assertEquals(last, 429, "the failing client is limited");
      const other = await fetch(failedLogin(99), from("203.0.113.2"));
      assertEquals(other.status, 401, "another client is not");
      await other.body?.cancel();
    } finally {
      await platform.close();
    }
  });
});

Deno.test("the local server passes the connection's address: attempts count under it, not under 'unknown'", async () => {
  await withAuth(async (env, sql) => {
    const server = await startTestServer(env, { only: ["auth"] });
    try {
      const res = await fetch(`${server.url}/functions/v1/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json", origin: FRONTEND },
        body: JSON.stringify({ email: "nobody@example.com", password: "wrong" }),
      });
      assertEquals(res.status, 401);
      await res.body?.cancel();
      const keys = (await sql`select key from internal.rate_limits where key like 'login-ip:%'`)
        .map((r) => r.key);
      assertEquals(keys, ["login-ip:127.0.0.1"]);
    } finally {
      await server.close();
    }
  });
});
