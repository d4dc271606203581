/**
 * auth login, refresh and logout through the real local server, a real Postgres and the
 * simulated Supabase Auth (GoTrue) on loopback: uniform 401s, per-email and per-IP limits across
 * instances, upstream failure, and sessions that never cross between users.
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "@std/assert";
import {
  startSupabaseAuthSimulator,
  type SupabaseAuthSimulator,
} from "../../../local/sandbox/supabase_auth.ts";
import { loadSigningKey } from "../../../local/sandbox/signing_key.ts";
import { freshDatabase, onServer } from "../../support/db.ts";
import { FRONTEND, testEnv } from "../../support/env.ts";
import { spawnServer, startTestServer, type TestServer } from "../../support/server.ts";

const ANON_KEY = "test-anon-key-0123456789abcdef";
/** The simulated project's signing key (ES256, as hosted Supabase signs user tokens). */
const SIGNING_KEY = await loadSigningKey();

/** The `sub` of an access token, after checking the project's key signed it. */
async function subjectOf(accessToken: string): Promise<unknown> {
  const claims = await SIGNING_KEY.verify(accessToken);
  assert(claims, "the access token is signed by the project's key");
  return claims.sub;
}
const USERS = [
  {
    id: "00000000-0000-4000-8000-00000000000a",
    email: "alice@example.com",
    password: "alice-pw-1",
  },
  { id: "00000000-0000-4000-8000-00000000000b", email: "bob@example.com", password: "bob-pw-22" },
];

function envFor(dbUrl: string, sim: SupabaseAuthSimulator, extra: Record<string, string> = {}) {
  return testEnv(dbUrl, {
    SUPABASE_URL: sim.url,
    SUPABASE_ANON_KEY: ANON_KEY,
    BROKER_OAUTH_CLIENT_ID: "client",
    BROKER_OAUTH_CLIENT_SECRET: "client-secret",
    BROKER_OAUTH_AUTHORIZE_URL: "http://127.0.0.1:9/oauth/authorize",
    BROKER_OAUTH_TOKEN_URL: "http://127.0.0.1:9/oauth/token",
    BROKER_OAUTH_REDIRECT_URL: "http://127.0.0.1:9/functions/v1/auth/oauth/callback",
    BROKER_TOKEN_KEY: btoa(String.fromCharCode(...new Uint8Array(32).fill(7))),
    ...extra,
  });
}

type Caller = { call(path: string, init?: RequestInit): Promise<Response> };

async function login(s: Caller, email: string, password: string, ip = "198.51.100.1") {
  const res = await s.call("auth/login", {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": ip, origin: FRONTEND },
    body: JSON.stringify({ email, password }),
  });
  return { res, body: await res.json() };
}

async function withServer(
  extra: Record<string, string>,
  fn: (server: TestServer, sim: SupabaseAuthSimulator) => Promise<void>,
) {
  const sim = await startSupabaseAuthSimulator({
    signingKey: SIGNING_KEY,
    anonKey: ANON_KEY,
    users: USERS,
  });
  const db = await freshDatabase({ migrated: true });
  let server: TestServer | undefined;
  try {
    server = await startTestServer(envFor(db.url, sim, extra), { only: ["auth"] });
    await fn(server, sim);
  } finally {
    await server?.close();
    await db.close();
    await sim.close();
  }
}

Deno.test("auth: login returns the session Supabase Auth issued for that user", async () => {
  await withServer({}, async (server) => {
    const { res, body } = await login(server, USERS[0].email, USERS[0].password);
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("cache-control"), "no-store");
    assertEquals(res.headers.get("access-control-allow-origin"), FRONTEND);
    assertEquals(await subjectOf(body.access_token), USERS[0].id);
    assertEquals(body.user, { id: USERS[0].id, email: USERS[0].email });
    assert(typeof body.refresh_token === "string" && body.refresh_token.length > 0);
  });
});

Deno.test("auth: unknown email and wrong password get indistinguishable 401 INVALID_CREDENTIALS", async () => {
  await withServer({}, async (server) => {
    const unknown = await login(server, "nobody@example.com", "whatever", "198.51.100.10");
    const wrong = await login(server, USERS[0].email, "wrong-password", "198.51.100.11");
    for (const r of [unknown, wrong]) {
      assertEquals(r.res.status, 401);
      assertEquals(r.body.error.code, "INVALID_CREDENTIALS");
    }
    const { requestId: _a, ...bodyA } = unknown.body.error;
    const { requestId: _b, ...bodyB } = wrong.body.error;
    assertEquals(bodyA, bodyB);
    const headers = (res: Response) =>
      [...res.headers].filter(([k]) => k !== "x-request-id" && k !== "date");
    assertEquals(headers(unknown.res), headers(wrong.res));
  });
});

Deno.test("auth: the sixth login for one email within the window gets 429, however the email is written", async () => {
  await withServer({}, async (server, sim) => {
    const spellings = [
      "alice@example.com",
      " Alice@Example.com ",
      "ALICE@EXAMPLE.COM",
      "ａｌｉｃｅ@example.com", // fullwidth letters: NFKC makes them plain
      "alice@example.com\t",
    ];
    for (const [i, email] of spellings.entries()) {
      const { res } = await login(server, email, "wrong", `203.0.113.${i + 1}`);
      assertEquals(res.status, 401);
    }
    const sixth = await login(server, "alice@example.com", USERS[0].password, "203.0.113.99");
    assertEquals(sixth.res.status, 429);
    assertEquals(sixth.body.error.code, "RATE_LIMITED");
    assert(Number(sixth.res.headers.get("retry-after")) >= 1);
    assertMatch(sixth.res.headers.get("ratelimit") ?? "", /"login-email";r=0;t=\d+/);
    assertMatch(sixth.res.headers.get("ratelimit-policy") ?? "", /"login-email";q=5;w=60/);
    assertEquals(sim.calls.filter((c) => c === "token:password").length, 5);
    // Another email from the same IPs is untouched.
    assertEquals(
      (await login(server, USERS[1].email, USERS[1].password, "203.0.113.1")).res.status,
      200,
    );
  });
});

Deno.test("auth: the 21st login from one client IP gets 429 whatever the emails", async () => {
  await withServer({}, async (server) => {
    for (let i = 0; i < 20; i++) {
      const { res } = await login(server, `user${i}@example.com`, "x", "10.9.8.7, 192.0.2.50");
      assertEquals(res.status, 401);
    }
    // The leftmost entry is the client's own to choose: changing it does not escape the limit.
    const blocked = await login(server, USERS[1].email, USERS[1].password, "1.2.3.4, 192.0.2.50");
    assertEquals(blocked.res.status, 429);
    assertMatch(blocked.res.headers.get("ratelimit") ?? "", /"login-ip";r=0/);
    const other = await login(server, USERS[1].email, USERS[1].password, "192.0.2.51");
    assertEquals(other.res.status, 200);
  });
});

Deno.test("auth: malformed login bodies get 400 and do not count against the email", async () => {
  await withServer({ LOGIN_EMAIL_LIMIT: "1" }, async (server) => {
    for (
      const body of [
        "{",
        JSON.stringify({ email: "alice@example.com" }),
        JSON.stringify({ email: "no-at-sign", password: "x" }),
      ]
    ) {
      const res = await server.call("auth/login", {
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": "192.0.2.9" },
        body,
      });
      assertEquals(res.status, 400);
      await res.body?.cancel();
    }
    assertEquals((await login(server, USERS[0].email, USERS[0].password)).res.status, 200);
  });
});

Deno.test("auth: Supabase Auth failing or too slow answers 503 with Retry-After", async () => {
  await withServer({ AUTH_TIMEOUT_MS: "300" }, async (server, sim) => {
    sim.failNext(1);
    const failed = await login(server, USERS[0].email, USERS[0].password, "192.0.2.1");
    assertEquals(failed.res.status, 503);
    assertEquals(failed.body.error.code, "UPSTREAM_UNAVAILABLE");
    assertMatch(failed.res.headers.get("retry-after") ?? "", /^\d+$/);
    sim.delayMs = 1000;
    const started = performance.now();
    const slow = await login(server, USERS[0].email, USERS[0].password, "192.0.2.2");
    assertEquals(slow.res.status, 503);
    assert(performance.now() - started < 900, "the deadline cut the call short");
    sim.delayMs = 0;
    await new Promise((r) => setTimeout(r, 800)); // let the simulator finish the slow call
    assertEquals(
      (await login(server, USERS[0].email, USERS[0].password, "192.0.2.3")).res.status,
      200,
    );
  });
});

Deno.test("auth: concurrent logins and refreshes of different users each get their own session", async () => {
  await withServer({}, async (server) => {
    const sessions = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => login(server, USERS[i % 2].email, USERS[i % 2].password, `192.0.2.${i}`),
      ),
    );
    const refreshed = await Promise.all(sessions.map(({ body }) =>
      server.call("auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: body.refresh_token }),
      }).then((r) => r.json())
    ));
    for (const [i, { res, body }] of sessions.entries()) {
      assertEquals(res.status, 200);
      assertEquals(await subjectOf(body.access_token), USERS[i % 2].id, "its own user's session");
    }
    for (const [i, s] of refreshed.entries()) {
      assertEquals(s.user.id, USERS[i % 2].id);
      assertEquals(await subjectOf(s.access_token), USERS[i % 2].id);
      assertNotEquals(s.refresh_token, sessions[i].body.refresh_token);
    }
    // Each its own: no two logins, nor two refreshes, share a refresh token.
    assertEquals(new Set(sessions.map((s) => s.body.refresh_token)).size, sessions.length);
    assertEquals(new Set(refreshed.map((s) => s.refresh_token)).size, refreshed.length);
  });
});

Deno.test("auth: a used refresh token gets 401; logout revokes the user's refresh tokens", async () => {
  await withServer({}, async (server) => {
    const refresh = (token: string) =>
      server.call("auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: token }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const { body: session } = await login(server, USERS[0].email, USERS[0].password);
    const next = await refresh(session.refresh_token);
    assertEquals(next.status, 200);
    const reused = await refresh(session.refresh_token);
    assertEquals(reused.status, 401);
    assertEquals(reused.body.error.code, "INVALID_REFRESH_TOKEN");

    const anonymous = await server.call("auth/logout", { method: "POST" });
    assertEquals(anonymous.status, 401);
    await anonymous.body?.cancel();
    const out = await server.call("auth/logout", {
      method: "POST",
      headers: { authorization: `Bearer ${next.body.access_token}` },
    });
    assertEquals(out.status, 200);
    assertEquals((await out.json()).signedOut, true);
    assertEquals((await refresh(next.body.refresh_token)).status, 401);
  });
});

Deno.test("auth: NUL characters and unpaired surrogates in any auth body field get 400, never 500, and cost no attempt", async () => {
  await withServer({ LOGIN_EMAIL_LIMIT: "1" }, async (server, sim) => {
    const bodies: [string, Record<string, string>, string][] = [
      ["auth/login", { email: "alice@example.com\u0000", password: "x" }, "email"],
      ["auth/login", { email: "\u0000", password: "x" }, "email"],
      ["auth/login", { email: USERS[0].email, password: "pw\u0000" }, "password"],
      ["auth/login", { email: "alice\ud800@example.com", password: "x" }, "email"],
      ["auth/login", { email: USERS[0].email, password: "\udc00" }, "password"],
      ["auth/refresh", { refresh_token: "abc\u0000def" }, "refresh_token"],
      ["auth/refresh", { refresh_token: "\ud83d" }, "refresh_token"],
    ];
    for (const [path, body, field] of bodies) {
      const res = await server.call(path, {
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": "192.0.2.77" },
        body: JSON.stringify(body),
      });
      assertEquals(res.status, 400, `${path} ${JSON.stringify(body)}`);
      const err = (await res.json()).error;
      assertEquals(err.code, "VALIDATION_FAILED");
      assertEquals(err.issues[0].path, field);
    }
    assertEquals(sim.calls.length, 0, "nothing reached Supabase Auth");
    // The one attempt the email allows is still there.
    assertEquals((await login(server, USERS[0].email, USERS[0].password)).res.status, 200);
  });
});

Deno.test("auth: refresh is limited per client IP with the RateLimit fields; past it 429 with Retry-After, Auth not called", async () => {
  await withServer({ REFRESH_IP_LIMIT: "3" }, async (server, sim) => {
    const refresh = (ip: string) =>
      server.call("auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": ip },
        body: JSON.stringify({ refresh_token: "not-a-real-refresh-token" }),
      });
    for (let i = 0; i < 3; i++) {
      const res = await refresh("203.0.113.50");
      assertEquals(res.status, 401);
      assertMatch(res.headers.get("ratelimit-policy") ?? "", /^"refresh-ip";q=3;w=60$/);
      assertMatch(
        res.headers.get("ratelimit") ?? "",
        new RegExp(`^"refresh-ip";r=${2 - i};t=\\d+$`),
      );
      await res.body?.cancel();
    }
    const blocked = await refresh("203.0.113.50");
    assertEquals(blocked.status, 429);
    assertEquals((await blocked.json()).error.code, "RATE_LIMITED");
    assert(Number(blocked.headers.get("retry-after")) >= 1);
    assertMatch(blocked.headers.get("ratelimit") ?? "", /^"refresh-ip";r=0;t=\d+$/);
    assertEquals(sim.calls.filter((c) => c === "token:refresh_token").length, 3);
    // Another client is untouched.
    const other = await refresh("203.0.113.51");
    assertEquals(other.status, 401);
    await other.body?.cancel();
  });
});

Deno.test("auth: logout is limited per client IP, counting unauthenticated calls too", async () => {
  await withServer({ LOGOUT_IP_LIMIT: "2" }, async (server, sim) => {
    const { body: session } = await login(server, USERS[0].email, USERS[0].password);
    const logout = (ip: string, token?: string) =>
      server.call("auth/logout", {
        method: "POST",
        headers: {
          "x-forwarded-for": ip,
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
      });
    const anonymous = await logout("203.0.113.60");
    assertEquals(anonymous.status, 401);
    assertMatch(anonymous.headers.get("ratelimit") ?? "", /^"logout-ip";r=1;t=\d+$/);
    await anonymous.body?.cancel();
    const out = await logout("203.0.113.60", session.access_token);
    assertEquals(out.status, 200);
    await out.body?.cancel();
    const blocked = await logout("203.0.113.60", session.access_token);
    assertEquals(blocked.status, 429);
    assert(Number(blocked.headers.get("retry-after")) >= 1);
    assertMatch(blocked.headers.get("ratelimit-policy") ?? "", /^"logout-ip";q=2;w=60$/);
    await blocked.body?.cancel();
    assertEquals(sim.calls.filter((c) => c.startsWith("logout")).length, 1);
    const other = await logout("203.0.113.61", session.access_token);
    assertEquals(other.status, 200);
    await other.body?.cancel();
  });
});

Deno.test(
  "auth: the refresh limit holds across two server processes on one database",
  onServer,
  async () => {
    const sim = await startSupabaseAuthSimulator({
      signingKey: SIGNING_KEY,
      anonKey: ANON_KEY,
      users: USERS,
    });
    const db = await freshDatabase({ migrated: true });
    const env = envFor(db.url, sim, { REFRESH_IP_LIMIT: "4" });
    const a = await spawnServer(env);
    const b = await spawnServer(env).catch(async (err) => {
      await a.stop();
      throw err;
    });
    try {
      const refresh = (s: Caller) =>
        s.call("auth/refresh", {
          method: "POST",
          headers: { "content-type": "application/json", "x-forwarded-for": "198.51.100.90" },
          body: JSON.stringify({ refresh_token: "unknown-refresh-token" }),
        });
      for (const s of [a, b, a, b]) {
        const res = await refresh(s);
        assertEquals(res.status, 401);
        await res.body?.cancel();
      }
      for (const s of [a, b]) {
        const res = await refresh(s);
        assertEquals(res.status, 429);
        await res.body?.cancel();
      }
      assertEquals(sim.calls.filter((c) => c === "token:refresh_token").length, 4);
    } finally {
      await a.stop();
      await b.stop();
      await db.close();
      await sim.close();
    }
  },
);

Deno.test(
  "auth: the email limit holds across two server processes on one database",
  onServer,
  async () => {
    const sim = await startSupabaseAuthSimulator({
      signingKey: SIGNING_KEY,
      anonKey: ANON_KEY,
      users: USERS,
    });
    const db = await freshDatabase({ migrated: true });
    const env = envFor(db.url, sim);
    const a = await spawnServer(env);
    const b = await spawnServer(env).catch(async (err) => {
      await a.stop();
      throw err;
    });
    try {
      for (const [i, s] of [a, b, a, b, a].entries()) {
        const { res } = await login(s, USERS[1].email, "wrong", `198.51.100.${i + 20}`);
        assertEquals(res.status, 401);
      }
      const sixth = await login(b, USERS[1].email, USERS[1].password, "198.51.100.40");
      assertEquals(sixth.res.status, 429);
      assert(Number(sixth.res.headers.get("retry-after")) >= 1);
      assertEquals(sim.calls.filter((c) => c === "token:password").length, 5);
    } finally {
      await a.stop();
      await b.stop();
      await db.close();
      await sim.close();
    }
  },
);
