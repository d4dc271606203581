/**
 * Broker OAuth through the real local server, a real Postgres and the simulated broker OAuth
 * server on loopback. The broker sends the browser back to a page of the frontend, which posts
 * `{code, state}` with the user's JWT: the full round trip stores encrypted tokens; another
 * user's token or none, replayed, expired, forged and tampered states, and failed exchanges
 * change nothing; a GET never exchanges a code.
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "@std/assert";
import {
  type BrokerOAuthSimulator,
  startBrokerOAuthSimulator,
} from "../../../local/sandbox/broker_oauth.ts";
import { startSupabaseAuthSimulator } from "../../../local/sandbox/supabase_auth.ts";
import {
  decryptToken,
  importTokenKey,
  tokenContext,
} from "../../../functions/auth/token_crypto.ts";
import { b64url, fromB64url } from "../../../functions/auth/oauth_state.ts";
import postgres from "postgres";
import { freshDatabase, onServer } from "../../support/db.ts";
import { type FaultProxy, startFaultProxy } from "../../support/fault_proxy.ts";
import { FRONTEND, testEnv, userToken } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";

const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
/** The frontend's page the broker sends the browser back to. */
const REDIRECT = `${FRONTEND}/settings/broker/callback`;
const ALICE = "00000000-0000-4000-8000-0000000000a1";
const BOB = "00000000-0000-4000-8000-0000000000b2";

/** What the broker put on the frontend's URL. */
interface Grant {
  code: string;
  state: string;
}

interface Answer {
  status: number;
  code?: string;
  body: Record<string, unknown>;
  headers: Headers;
}

interface Ctx {
  server: TestServer;
  sim: BrokerOAuthSimulator;
  /** Between the server and its database (`withOAuth(fn, env, { proxied: true })`). */
  proxy?: FaultProxy;
  /** The database's own URL, not through the proxy. */
  dbUrl: string;
  /** Starts the flow as `user` and lets the broker approve: what it hands the frontend. */
  approve(user: string): Promise<Grant>;
  /** The frontend posting the grant, with `user`'s JWT (none when `user` is null). */
  callback(grant: Partial<Grant>, user: string | null): Promise<Answer>;
  stored(): Promise<{ connections: number; tokens: number }>;
}

async function withOAuth(
  fn: (ctx: Ctx) => Promise<void>,
  extra: Record<string, string> = {},
  opts: { proxied?: boolean } = {},
) {
  const sim = await startBrokerOAuthSimulator({
    clientId: "client-1",
    clientSecret: "client-secret-1",
    redirectUri: REDIRECT,
  });
  const auth = await startSupabaseAuthSimulator({
    anonKey: "test-anon-key-0123456789abcdef",
    users: [],
  });
  const db = await freshDatabase({ migrated: true });
  const target = new URL(db.url);
  const proxy = opts.proxied
    ? await startFaultProxy({ hostname: target.hostname, port: Number(target.port) })
    : undefined;
  const servers: TestServer[] = [];
  const env = testEnv(proxy ? proxy.url(db.url) : db.url, {
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
      proxy,
      dbUrl: db.url,
      async approve(user) {
        const res = await server.call("auth/oauth/start", {
          headers: { authorization: `Bearer ${await userToken(user)}`, origin: FRONTEND },
        });
        assertEquals(res.status, 200);
        const { url } = await res.json();
        const authorize = new URL(url);
        assertEquals(authorize.searchParams.get("response_type"), "code");
        assertEquals(authorize.searchParams.get("redirect_uri"), REDIRECT);
        const back = await fetch(url, { redirect: "manual" });
        await back.body?.cancel();
        const page = new URL(back.headers.get("location")!);
        assertEquals(`${page.origin}${page.pathname}`, REDIRECT, "back to the frontend's page");
        return { code: page.searchParams.get("code")!, state: page.searchParams.get("state")! };
      },
      async callback(grant, user) {
        const headers: Record<string, string> = {
          "content-type": "application/json",
          origin: FRONTEND,
        };
        if (user) headers.authorization = `Bearer ${await userToken(user)}`;
        const res = await server.call("auth/oauth/callback", {
          method: "POST",
          headers,
          body: JSON.stringify(grant),
        });
        const body = await res.json();
        return { status: res.status, code: body.error?.code, body, headers: res.headers };
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
    await proxy?.close();
    await db.close();
    await auth.close();
    await sim.close();
  }
}

Deno.test("auth oauth: a full round trip stores the connection and encrypted tokens that decrypt back", async () => {
  await withOAuth(async ({ server, sim, approve, callback }) => {
    const done = await callback(await approve(ALICE), ALICE);
    assertEquals(done.status, 200);
    assertEquals(done.body, { connected: true, broker: "alpaca" });
    assertEquals(done.headers.get("cache-control"), "no-store");
    assertEquals(done.headers.get("access-control-allow-origin"), FRONTEND);
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
    assertEquals((await callback(await approve(ALICE), ALICE)).status, 200);
    assertEquals((await callback(await approve(BOB), BOB)).status, 200);
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
    const grant = await approve(ALICE);
    assertEquals((await callback(grant, ALICE)).status, 200);
    const before = await server.platform.db.query((sql) =>
      sql`select encode(access_token, 'hex') as t from internal.broker_tokens`
    );
    const replay = await callback(grant, ALICE);
    assertEquals([replay.status, replay.code], [400, "OAUTH_STATE_INVALID"]);
    assertEquals(sim.calls, 1); // refused before any second exchange
    const after = await server.platform.db.query((sql) =>
      sql`select encode(access_token, 'hex') as t from internal.broker_tokens`
    );
    assertEquals(after.map((r) => r.t), before.map((r) => r.t));
  });
});

Deno.test("auth oauth: an expired state is refused and stores nothing", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    const grant = await approve(ALICE);
    await new Promise((r) => setTimeout(r, 2100));
    const late = await callback(grant, ALICE);
    assertEquals([late.status, late.code], [400, "OAUTH_STATE_EXPIRED"]);
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  }, { OAUTH_STATE_TTL_SECONDS: "1" });
});

Deno.test("auth oauth: forged, tampered and missing states are refused and store nothing", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    const { code, state } = await approve(ALICE);
    const [nonce, expiry, signature] = state.split(".");
    // Every byte of the signature, tampered one at a time (decoded, changed, encoded back):
    // whatever the last character, each is a different signature and must fail.
    const bytes = fromB64url(signature);
    const tampered = Array.from({ length: bytes.length }, (_, i) => {
      const copy = bytes.slice();
      copy[i] ^= 0x01;
      return `${nonce}.${expiry}.${b64url(copy)}`;
    });
    // The same signature bytes spelled with non-zero padding bits in the last character (the
    // flaky case of old: a lenient decoder read them as the original signature).
    const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const index = last.indexOf(signature.at(-1)!);
    const lenient = `${nonce}.${expiry}.${signature.slice(0, -1)}${last[index ^ 0x01]}`;
    const flip = (s: string, i: number) =>
      s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    const variants = [
      ...tampered,
      lenient,
      flip(state, 0), // nonce
      state.replace(/\.(\d+)\./, (_, e) => `.${Number(e) + 3600}.`), // extended expiry
      "not-a-state",
    ];
    for (const forged of variants) {
      const answer = await callback({ code, state: forged }, ALICE);
      assertEquals([answer.status, answer.code], [400, "OAUTH_STATE_INVALID"], forged);
    }
    const missing = await callback({ code }, ALICE);
    assertEquals([missing.status, missing.code], [400, "VALIDATION_FAILED"]);
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    // The untouched state still works: the refusals above were about the forgeries alone.
    assertEquals((await callback({ code, state }, ALICE)).status, 200);
  }, { OAUTH_CALLBACK_USER_LIMIT: "100" });
});

Deno.test("auth oauth: user B completing A's state is refused with 403 and stores nothing; A still can", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    // A starts the flow; B (the victim, say) is the one whose browser comes back with the code.
    const grant = await approve(ALICE);
    const asBob = await callback(grant, BOB);
    assertEquals([asBob.status, asBob.code], [403, "OAUTH_STATE_FORBIDDEN"]);
    assertEquals(sim.calls, 0, "the code was not exchanged");
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    const asAlice = await callback(grant, ALICE);
    assertEquals(asAlice.status, 200);
    assertEquals(await stored(), { connections: 1, tokens: 1 });
  });
});

Deno.test("auth oauth: a callback without a token gets 401, and a GET gets 405; neither exchanges nor stores", async () => {
  await withOAuth(async ({ server, sim, approve, callback, stored }) => {
    const grant = await approve(ALICE);
    const anonymous = await callback(grant, null);
    assertEquals(anonymous.status, 401);
    assertMatch(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/);
    // The broker's redirect as it used to arrive: a bare GET with the code in the query.
    const get = await server.call(
      `auth/oauth/callback?${new URLSearchParams({ ...grant })}`,
      { redirect: "manual", headers: { authorization: `Bearer ${await userToken(ALICE)}` } },
    );
    assertEquals(get.status, 405);
    assertEquals(get.headers.get("allow"), "POST");
    assertEquals((await get.json()).error.code, "METHOD_NOT_ALLOWED");
    assertEquals(sim.calls, 0);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    assertEquals((await callback(grant, ALICE)).status, 200);
  });
});

Deno.test("auth oauth: a failed or refused code exchange leaves no half-connection", async () => {
  await withOAuth(async ({ sim, approve, callback, stored, server }) => {
    sim.failNext(1);
    const failed = await callback(await approve(ALICE), ALICE);
    assertEquals([failed.status, failed.code], [503, "UPSTREAM_UNAVAILABLE"]);
    assertMatch(failed.headers.get("retry-after") ?? "", /^\d+$/);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
    // The state bought its one exchange attempt (issue 25, finding 2): the user starts again.
    const [state] = await server.platform.db.query((sql) =>
      sql`select count(*)::int as n from internal.oauth_states where consumed_at is not null`
    );
    assertEquals(state.n, 1);

    const { state: fresh } = await approve(ALICE);
    const refused = await callback({ code: "code-the-broker-never-issued", state: fresh }, ALICE);
    assertEquals([refused.status, refused.code], [400, "OAUTH_CODE_REJECTED"]);
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  });
});

Deno.test(
  "auth oauth: the database failing between the exchange and the store leaves nothing stored and the state spent",
  onServer,
  async () => {
    await withOAuth(
      async ({ sim, proxy, dbUrl, approve, callback }) => {
        const grant = await approve(ALICE);
        sim.delayMs = 1000;
        const answer = callback(grant, ALICE);
        // The exchange has reached the broker (the state was checked before it): now the
        // database goes away before the connection can be stored.
        while (sim.calls === 0) await new Promise((r) => setTimeout(r, 10));
        proxy!.cut();
        const failed = await answer;
        assertEquals([failed.status, failed.code], [503, "DB_UNAVAILABLE"]);
        assertMatch(failed.headers.get("retry-after") ?? "", /^\d+$/);
        proxy!.heal();
        const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
        try {
          const [row] = await sql`select
          (select count(*)::int from public.broker_connections) as connections,
          (select count(*)::int from internal.broker_tokens) as tokens,
          (select count(*)::int from internal.oauth_states where consumed_at is not null) as used`;
          assertEquals({ ...row }, { connections: 0, tokens: 0, used: 1 });
        } finally {
          await sql.end();
        }
      },
      {},
      { proxied: true },
    );
  },
);

/** Issue 25, finding 2: what a start and a callback cost is bounded per user, per IP, per state. */
const startAs = async (server: TestServer, user: string, method = "GET", ip = "198.51.100.1") =>
  await server.call("auth/oauth/start", {
    method,
    headers: {
      authorization: `Bearer ${await userToken(user)}`,
      origin: FRONTEND,
      "x-forwarded-for": ip,
    },
  });

async function liveStates(server: TestServer, user: string): Promise<number> {
  const [row] = await server.platform.db.query((sql) =>
    sql<{ n: number }[]>`select count(*)::int as n from internal.oauth_states
      where user_id = ${user} and consumed_at is null and expires_at > now()`
  );
  return row.n;
}

Deno.test("auth oauth: starts are limited per user and per client IP, HEAD creates no state, and a user holds at most OAUTH_LIVE_STATES_MAX live states", async () => {
  await withOAuth(async ({ server }) => {
    const head = await startAs(server, ALICE, "HEAD");
    assertEquals(head.status, 405);
    assertEquals(await liveStates(server, ALICE), 0, "a HEAD stores nothing");

    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await startAs(server, ALICE);
      statuses.push(res.status);
      await res.body?.cancel();
    }
    assertEquals(statuses, [200, 200, 200, 200, 429], "per user");
    assertEquals(await liveStates(server, ALICE), 2, "the oldest live states were evicted");

    // Per IP: other users from one address share its quota (6 here, 4 used by ALICE above).
    const others: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await startAs(server, crypto.randomUUID());
      others.push(res.status);
      await res.body?.cancel();
    }
    assertEquals(others, [200, 200, 429], "per IP");
    const elsewhere = await startAs(server, crypto.randomUUID(), "GET", "198.51.100.2");
    assertEquals(elsewhere.status, 200, "another address has its own quota");
    await elsewhere.body?.cancel();
  }, { OAUTH_START_USER_LIMIT: "4", OAUTH_IP_LIMIT: "6", OAUTH_LIVE_STATES_MAX: "2" });
});

Deno.test("auth oauth: a state buys one exchange attempt, whatever its outcome", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    // Refused code, broker error, broker 429: each spends the state; the real code then
    // reaches no broker.
    const outcomes: [string, () => void, number, string][] = [
      ["a guessed code", () => {}, 400, "OAUTH_CODE_REJECTED"],
      ["a broker 500", () => sim.failNext(1), 503, "UPSTREAM_UNAVAILABLE"],
      ["a broker 429", () => sim.failNext(1, 429), 503, "BROKER_OAUTH_THROTTLED"],
    ];
    for (const [what, arrange, status, code] of outcomes) {
      const grant = await approve(ALICE);
      arrange();
      const before = sim.calls;
      const first = await callback(
        { code: `guess-${crypto.randomUUID()}`, state: grant.state },
        ALICE,
      );
      assertEquals([first.status, first.code], [status, code], what);
      for (let i = 0; i < 3; i++) {
        const again = await callback(i === 0 ? grant : { ...grant, code: `guess-${i}` }, ALICE);
        assertEquals([again.status, again.code], [400, "OAUTH_STATE_INVALID"], what);
      }
      assertEquals(sim.calls - before, 1, `${what}: one exchange for the state`);
    }
    assertEquals(await stored(), { connections: 0, tokens: 0 });
  }, { OAUTH_CALLBACK_USER_LIMIT: "100" });
});

Deno.test("auth oauth: callbacks are limited per user and per client IP before any exchange", async () => {
  await withOAuth(async ({ server, sim }) => {
    const post = async (user: string, ip: string) => {
      const res = await server.call("auth/oauth/callback", {
        method: "POST",
        headers: {
          authorization: `Bearer ${await userToken(user)}`,
          origin: FRONTEND,
          "content-type": "application/json",
          "x-forwarded-for": ip,
        },
        body: JSON.stringify({ code: "c", state: "not-a-state" }),
      });
      await res.body?.cancel();
      return res.status;
    };
    const mine: number[] = [];
    for (let i = 0; i < 4; i++) mine.push(await post(ALICE, "198.51.100.7"));
    assertEquals(mine, [400, 400, 400, 429], "per user");
    const shared: number[] = [];
    for (let i = 0; i < 4; i++) shared.push(await post(crypto.randomUUID(), "198.51.100.8"));
    assertEquals(shared, [400, 400, 400, 400], "other users from another address are not held");
    assertEquals(await post(crypto.randomUUID(), "198.51.100.8"), 400);
    assertEquals(await post(crypto.randomUUID(), "198.51.100.8"), 400);
    assertEquals(await post(crypto.randomUUID(), "198.51.100.8"), 429, "per IP (6 a window)");
    assertEquals(sim.calls, 0);
  }, { OAUTH_CALLBACK_USER_LIMIT: "3", OAUTH_IP_LIMIT: "6" });
});

Deno.test("auth oauth: the broker answering 429 does not open the shared breaker for everyone", async () => {
  await withOAuth(async ({ sim, approve, callback, stored }) => {
    for (let i = 0; i < 8; i++) {
      const grant = await approve(ALICE);
      sim.failNext(1, 429);
      const throttled = await callback(grant, ALICE);
      assertEquals([throttled.status, throttled.code], [503, "BROKER_OAUTH_THROTTLED"]);
      assertEquals(throttled.headers.get("retry-after"), "2", "the broker's own Retry-After");
    }
    const ok = await callback(await approve(BOB), BOB);
    assertEquals(ok.status, 200, `the breaker stayed closed: ${JSON.stringify(ok.body)}`);
    assertEquals(await stored(), { connections: 1, tokens: 1 });
  }, { OAUTH_CALLBACK_USER_LIMIT: "100", OAUTH_START_USER_LIMIT: "100" });
});
