/**
 * auth's configuration: broker OAuth is an optional group of six variables, all or none. With
 * none, login, refresh and logout serve and `/oauth/*` says OAuth is not configured; with some
 * but not all, the function does not boot and names every missing one.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { startSupabaseAuthSimulator } from "../../../local/sandbox/supabase_auth.ts";
import { freshDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv, userToken } from "../../support/env.ts";
import { startTestServer } from "../../support/server.ts";

const ANON_KEY = "test-anon-key-0123456789abcdef";
const USER = {
  id: "00000000-0000-4000-8000-00000000000c",
  email: "carol@example.com",
  password: "carol-pw-3",
};
const OAUTH = {
  BROKER_OAUTH_CLIENT_ID: "client",
  BROKER_OAUTH_CLIENT_SECRET: "client-secret",
  BROKER_OAUTH_AUTHORIZE_URL: "http://127.0.0.1:9/oauth/authorize",
  BROKER_OAUTH_TOKEN_URL: "http://127.0.0.1:9/oauth/token",
  BROKER_OAUTH_REDIRECT_URL: `${FRONTEND}/broker/callback`,
  BROKER_TOKEN_KEY: btoa(String.fromCharCode(...new Uint8Array(32).fill(7))),
};

async function withAuth(
  extra: Record<string, string>,
  fn: (
    call: (path: string, init?: RequestInit) => Promise<Response>,
    logs: string[],
  ) => Promise<void>,
) {
  const sim = await startSupabaseAuthSimulator({
    anonKey: ANON_KEY,
    users: [USER],
  });
  const db = await freshDatabase({ migrated: true });
  try {
    const server = await startTestServer(
      testEnv(db.url, { SUPABASE_URL: sim.url, SUPABASE_ANON_KEY: ANON_KEY, ...extra }),
      { only: ["auth"] },
    );
    try {
      await fn(server.call, server.logs);
    } finally {
      await server.close();
    }
  } finally {
    await db.close();
    await sim.close();
  }
}

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", origin: FRONTEND, ...headers },
  body: JSON.stringify(body),
});

Deno.test("auth boots without broker OAuth variables: login, refresh and logout serve; /oauth/* answers 501 OAUTH_NOT_CONFIGURED", async () => {
  await withAuth({}, async (call) => {
    const login = await call("auth/login", json({ email: USER.email, password: USER.password }));
    assertEquals(login.status, 200);
    const session = await login.json();
    assertEquals(session.user.id, USER.id);

    const refreshed = await call("auth/refresh", json({ refresh_token: session.refresh_token }));
    assertEquals(refreshed.status, 200);
    const next = await refreshed.json();

    const out = await call("auth/logout", {
      method: "POST",
      headers: { authorization: `Bearer ${next.access_token}`, origin: FRONTEND },
    });
    assertEquals(out.status, 200);
    await out.body?.cancel();

    const token = await userToken(USER.id);
    const start = await call("auth/oauth/start", {
      headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      redirect: "manual",
    });
    const callback = await call(
      "auth/oauth/callback",
      {
        ...json({ code: "c", state: "s" }, { authorization: `Bearer ${token}` }),
        redirect: "manual",
      },
    );
    for (const res of [start, callback]) {
      assertEquals(res.status, 501, "a clear error, never a 500 or a redirect");
      assertEquals(res.headers.get("location"), null);
      const err = (await res.json()).error;
      assertEquals(err.code, "OAUTH_NOT_CONFIGURED");
      assertMatch(err.message, /broker OAuth is not configured/i);
      assert(err.requestId);
    }
  });
});

Deno.test("auth with some but not all broker OAuth variables does not boot, naming every missing one", async () => {
  const { BROKER_OAUTH_TOKEN_URL: _t, BROKER_TOKEN_KEY: _k, ...partial } = OAUTH;
  await withAuth(partial, async (call, logs) => {
    const res = await call("auth/login", json({ email: USER.email, password: USER.password }));
    assertEquals(res.status, 503);
    assert(res.headers.get("retry-after"));
    const err = (await res.json()).error;
    assertEquals(err.code, "BOOT_ERROR");
    assertMatch(err.message, /BROKER_OAUTH_TOKEN_URL/);
    assertMatch(err.message, /BROKER_TOKEN_KEY/);
    for (const [name, value] of Object.entries(partial)) {
      assert(!err.message.includes(name), `${name} is set and not a problem`);
      assert(!logs.join("\n").includes(value), `the value of ${name} was printed`);
    }
  });
});

Deno.test("auth names a partial broker OAuth group together with its other problems", async () => {
  await withAuth(
    { BROKER_OAUTH_CLIENT_ID: "client", SUPABASE_ANON_KEY: "short" },
    async (call) => {
      const res = await call("auth/login", json({ email: USER.email, password: USER.password }));
      assertEquals(res.status, 503);
      const { message } = (await res.json()).error;
      assertMatch(message, /SUPABASE_ANON_KEY/);
      for (const name of Object.keys(OAUTH).filter((n) => n !== "BROKER_OAUTH_CLIENT_ID")) {
        assertMatch(message, new RegExp(name));
      }
    },
  );
});
