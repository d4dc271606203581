/**
 * Clients are told apart by the connection's address when no proxy header is present (issue 12,
 * finding 7): the local server passes the address on, and one client's failed logins never lock
 * out another.
 */
import postgres from "postgres";
import { assertEquals } from "@std/assert";
import authFunction from "../../../functions/auth/index.ts";
import { ipBucket } from "../../../functions/auth/client_ip.ts";
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

Deno.test("ipBucket(): one key per client however its address is spelled; IPv6 by its /64", () => {
  const v4 = [
    "203.0.113.7",
    "::ffff:203.0.113.7",
    "::FFFF:cb00:7107",
    "203.000.113.007",
    "203.0.113.7:443",
    "[::ffff:203.0.113.7]:8080",
    " 203.0.113.7 ",
  ];
  for (const a of v4) assertEquals(ipBucket(a), "203.0.113.7", a);
  const v6 = [
    "2001:db8:1:2::1",
    "2001:DB8:1:2::FFFF",
    "2001:0db8:0001:0002:abcd:ef01:2345:6789",
    "[2001:db8:1:2::9]:443",
    "fe80::1%eth0".replace("fe80::1", "2001:db8:1:2::1"),
  ];
  for (const a of v6) assertEquals(ipBucket(a), "2001:db8:1:2::/64", a);
  assertEquals(ipBucket("2001:db8:1:3::1"), "2001:db8:1:3::/64", "the next /64 is another client");
  // ipaddr.js reads a leading zero as octal, as inet_aton does: 009 is no address at all.
  for (
    const bad of [
      "",
      "unknown",
      "1.2.3.4.5",
      "2001:db8::1::2",
      "x".repeat(60),
      "1.2.3.4:99999",
      "203.0.113.009",
    ]
  ) {
    assertEquals(ipBucket(bad), undefined, bad);
  }
});

Deno.test("failed logins from one address spelled many ways, or from one IPv6 /64, share one per-IP quota", async () => {
  await withAuth(async (env) => {
    const platform = await createPlatform({ ...env, LOGIN_IP_LIMIT: "4" }, {
      log: createLogger({ write: () => {} }),
      onConnect: async (sql) => void await migrate(sql, await loadMigrations()),
    });
    try {
      const { fetch } = await bootFunction(authFunction, platform);
      for (
        const spellings of [
          [
            "203.0.113.7",
            "::ffff:203.0.113.7",
            "203.000.113.007",
            "203.0.113.7:1234",
            "[::ffff:cb00:7107]:1",
          ],
          [
            "2001:db8:5:6::1",
            "2001:db8:5:6::2",
            "2001:db8:5:6:ffff::",
            "2001:DB8:5:6::3",
            "[2001:db8:5:6::4]:80",
          ],
        ]
      ) {
        const statuses: number[] = [];
        for (const [i, address] of spellings.entries()) {
          const res = await fetch(failedLogin(i), from(address));
          statuses.push(res.status);
          await res.body?.cancel();
        }
        assertEquals(statuses, [401, 401, 401, 401, 429], spellings.join(" "));
      }
    } finally {
      await platform.close();
    }
  });
});
