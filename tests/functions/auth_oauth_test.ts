/**
 * Broker OAuth through the real local server, a real Postgres and the simulated broker OAuth
 * server on loopback: the full round trip stores encrypted tokens; replayed, expired, forged and
 * other users' states and failed exchanges change nothing.
 */
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import {
  type BrokerOAuthSimulator,
  startBrokerOAuthSimulator,
} from "../../local/sandbox/broker_oauth.ts";
import { startSupabaseAuthSimulator } from "../../local/sandbox/supabase_auth.ts";
import { decryptToken, importTokenKey, tokenContext } from "../../functions/auth/token_crypto.ts";
import { freshDatabase } from "../support/db.ts";
import { FRONTEND, JWT_SECRET, testEnv, userToken } from "../support/env.ts";
import { startTestServer, type TestServer } from "../support/server.ts";

const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
const REDIRECT = "http://127.0.0.1:9/functions/v1/auth/oauth/callback";
const ALICE = "00000000-0000-4000-8000-0000000000a1";
const BOB = "00000000-0000-4000-8000-0000000000b2";

interface Ctx {
  server: TestServer;
  sim: BrokerOAuthSimulator;
  /** Starts the flow as `user` and lets the broker approve: the callback's query string. */
  approve(user: string, server?: TestServer): Promise<string>;
  callback(query: string, init?: RequestInit, server?: TestServer): Promise<URL>;
  stored(): Promise<{ connections: number; tokens: number }>;
}

async function withOAuth(fn: (ctx: Ctx) => Promise<void>, extra: Record<string, string> = {}) {
  const sim = await startBrokerOAuthSimulator({
    clientId: "client-1",
    clientSecret: "client-secret-1",
    redirectUri: REDIRECT,
  });
  const auth = await startSupabaseAuthSimulator({
    jwtSecret: JWT_SECRET,
    anonKey: "test-anon-key-0123456789abcdef",
    users: [],
  });
  const db = await freshDatabase();
  const servers: TestServer[] = [];
  const env = testEnv(db.url, {
    SUPABASE_URL: auth.url,
    SUPABASE_ANON_KEY: "test-anon-key-0123456789abcdef",
    BROKER_OAUTH_CLIENT_ID: "client-1",
    BROKER_OAUTH_CLIENT_SECRET: "client-secret-1",
    BROKER_OAUTH_AUTHORIZE_URL: sim.authorizeUrl,
    BROKER_OAUTH_TOKEN_URL: sim.tokenUrl,
    BROKER_OAUTH_REDIRECT_URL: REDIRECT,
    BROKER_TOKEN_KEY: KEY,
    ...extra,
  });
  try {
    const server = await startTestServer(env, { only: ["auth"] });
    servers.push(server);
    const ctx: Ctx = {
      server,
      sim,
      async approve(user, s = server) {
        const res = await s.call("auth/oauth/start", {
          headers: { authorization: `Bearer ${await userToken(user)}`, origin: FRONTEND },
        });
        assertEquals(res.status, 200);
        const { url } = await res.json();
        const authorize = new URL(url);
        assertEquals(authorize.searchParams.get("response_type"), "code");
        assertEquals(authorize.searchParams.get("redirect_uri"), REDIRECT);
        const back = await fetch(url, { redirect: "manual" });
        await back.body?.cancel();
        return new URL(back.headers.get("location")!).search;
      },
      async callback(query, init = {}, s = server) {
        const res = await s.call(`auth/oauth/callback${query}`, { ...init, redirect: "manual" });
        await res.body?.cancel();
        assertEquals(res.status, 303);
        return new URL(res.headers.get("location")!);
      },
      async stored() {
        const [row] = await server.platform.db.query((sql) =>
          sql<{ connections: number; tokens: number }[]>`select
            (select count(*)::int from public.broker_connections) as connections,
            (select count(*)::int from internal.broker_tokens) as tokens`
        );
        return row;
      },
    };
    await fn(ctx);
  } finally {
    for (const s of servers) await s.close();
    await db.close();
    await auth.close();
    await sim.close();
  }
}

const outcome = (url: URL) => ({
  origin: url.origin,
  broker: url.searchParams.get("broker"),
  reason: url.searchParams.get("reason"),
});

Deno.test("auth oauth: a full round trip stores the connection and encrypted tokens that decrypt back", async () => {
  await withOAuth(async ({ server, sim, approve, callback }) => {
    const back = await callback(await approve(ALICE));
    assertEquals(outcome(back), { origin: FRONTEND, broker: "connected", reason: null });
    const [conn] = await server.platform.db.query((sql) =>
      sql`select user_id::text, broker, status from public.broker_connections`
    );
    assertEquals({ ...conn }, { user_id: ALICE, broker: "alpaca", status: "connected" });
    const [row] = await server.platform.db.query((sql) =>
      sql<{ access_token: Uint8Array; refresh_token: Uint8Array }[]>`
        select access_token, refresh_token from internal.broker_tokens where user_id = ${ALICE}`
    );
    const issued = sim.issued[0];
    const plain = new TextEncoder().encode(issued.access_token);
    const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    assert(!hex(row.access_token).includes(hex(plain)), "the plaintext is not stored");
    assertNotEquals(hex(row.access_token), hex(plain));
    const key = await importTokenKey(KEY);
    const access = await decryptToken(
      key,
      new Uint8Array(row.access_token),
      tokenContext(ALICE, "alpaca", "access"),
    );
    assertEquals(access, issued.access_token);
    assertEquals(
      await decryptToken(
        key,
        new Uint8Array(row.refresh_token),
        tokenContext(ALICE, "alpaca", "refresh"),
      ),
      issued.refresh_token,
    );
    // Bound to its row: the same bytes do not open as another user's token.
    let moved = false;
    await decryptToken(key, new Uint8Array(row.access_token), tokenContext(BOB, "alpaca", "access"))
      .then(() => moved = true, () => {});
    assertEquals(moved, false);
  });
});

Deno.test("auth oauth: the API roles cannot read tokens, and users see only their own connection", async () => {
  await withOAuth(async ({ server, approve, callback }) => {
    await callback(await approve(ALICE));
    await callback(await approve(BOB));
    const seen = await server.platform.db.transaction(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: BOB })}, true)`;
      return await tx`select user_id::text from public.broker_connections`;
    });
    assertEquals(seen.map((r) => r.user_id), [BOB]);
    const [grants] = await server.platform.db.query((sql) =>
      sql`select
        has_schema_privilege('authenticated', 'internal', 'usage') as internal_usage,
        has_table_privilege('authenticated', 'internal.broker_tokens', 'select') as tokens,
        has_table_privilege('anon', 'public.broker_connections', 'select') as anon_connections,
        has_table_privilege('authenticated', 'public.broker_connections', 'insert') as insert`
    );
    assertEquals({ ...grants }, {
      internal_usage: false,
      tokens: false,
      anon_connections: false,
      insert: false,
    });
  });
});

Deno.test("auth oauth: a replayed state is refused and changes nothing", async () => {
  await withOAuth(async ({ server, sim, approve, callback }) => {
    const query = await approve(ALICE);
    assertEquals(outcome(await callback(query)).broker, "connected");
    const before = await server.platform.db.query((sql) =>
      sql`select encode(access_token, 'hex') as t from internal.broker_tokens`
    );
    const replay = await callback(query);
    assertEquals(outcome(replay), { origin: FRONTEND, broker: "error", reason: "invalid_state" });
    assertEquals(sim.calls, 1); // refused before any second exchange
    const after = await server.platform.db.query((sql) =>
      sql`select encode(access_token, 'hex') as t from internal.broker_tokens`
    );
    assertEquals(after.map((r) => r.t), before.map((r) => r.t));
  });
});

Deno.test("auth oauth: an expired state is refused and stores nothing", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    const query = await approve(ALICE);
    await new Promise((r) => setTimeout(r, 2100));
    const back = await callback(query);
    assertEquals(outcome(back).reason, "expired_state");
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  }, { OAUTH_STATE_TTL_SECONDS: "1" });
});

Deno.test("auth oauth: forged, tampered and missing states are refused and store nothing", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    const query = new URLSearchParams(await approve(ALICE));
    const state = query.get("state")!;
    const flip = (s: string, i: number) =>
      s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    const variants = [
      flip(state, state.length - 1), // signature
      flip(state, 0), // nonce
      state.replace(/\.(\d+)\./, (_, e) => `.${Number(e) + 3600}.`), // extended expiry
      "not-a-state",
    ];
    for (const forged of variants) {
      const q = new URLSearchParams({ code: query.get("code")!, state: forged });
      assertEquals(outcome(await callback(`?${q}`)).reason, "invalid_state", forged);
    }
    assertEquals(outcome(await callback(`?code=${query.get("code")}`)).reason, "invalid_request");
    assertEquals(
      outcome(await callback(`?error=access_denied&state=${state}`)).reason,
      "access_denied",
    );
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  });
});

Deno.test("auth oauth: another user's state is refused and stores nothing; its owner can still use it", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    const query = await approve(ALICE);
    const asBob = await callback(query, {
      headers: { authorization: `Bearer ${await userToken(BOB)}` },
    });
    assertEquals(outcome(asBob).reason, "invalid_state");
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    const asAlice = await callback(query, {
      headers: { authorization: `Bearer ${await userToken(ALICE)}` },
    });
    assertEquals(outcome(asAlice).broker, "connected");
  });
});

Deno.test("auth oauth: a failed or refused code exchange leaves no half-connection", async () => {
  await withOAuth(async ({ sim, approve, callback, stored, server }) => {
    sim.failNext(1);
    const failed = await callback(await approve(ALICE));
    assertEquals(outcome(failed).reason, "broker_unavailable");
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    const [state] = await server.platform.db.query((sql) =>
      sql`select count(*)::int as n from internal.oauth_states where consumed_at is not null`
    );
    assertEquals(state.n, 0);

    const q = new URLSearchParams(await approve(ALICE));
    q.set("code", "code-the-broker-never-issued");
    assertEquals(outcome(await callback(`?${q}`)).reason, "exchange_refused");
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  });
});
