/**
 * Token refusal through each function's real wiring: the local server with every function, over
 * a real socket, with the sandbox's project keys (ES256 with a `kid`, the JWKS in `SUPABASE_JWKS`
 * and at `$SUPABASE_URL/auth/v1/.well-known/jwks.json`, plus the legacy HS256 secret the tests
 * configure). The abuse suite only checks that bad tokens never get a 5xx; this table checks the
 * answer itself: on every route that needs a caller, a forged signature, an expired token,
 * `alg: none`, a key that is not the project's and a valid token of the wrong role get `401`
 * (`403` for the wrong role), with the error code that says which, and reach neither the
 * database nor an upstream. A valid token on the same route is the control: it gets past the
 * guard, so the table tests the guard and not a typo in a path. status, which serves everyone,
 * shows its service-only details to none of these tokens.
 */
import { assert, assertEquals } from "@std/assert";
import { sign } from "hono/jwt";
import { generateKeyPair, SignJWT } from "jose";
import { loadSigningKey } from "../../local/sandbox/signing_key.ts";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { type Stack, startStack } from "../support/stack.ts";

/** A route that needs a caller: its method, path under /functions/v1, and a well-formed body. */
interface Route {
  method: "GET" | "POST";
  path: string;
  body?: unknown;
  role: "authenticated" | "service_role";
}

const ORDER = { symbol: "AAPL", side: "buy", type: "market", qty: "1", time_in_force: "day" };

const ROUTES: Route[] = [
  { method: "GET", path: "broker-order", role: "authenticated" },
  { method: "POST", path: "broker-order", body: ORDER, role: "authenticated" },
  { method: "GET", path: "market-data?symbols=AAPL", role: "authenticated" },
  { method: "GET", path: "tools", role: "authenticated" },
  {
    method: "POST",
    path: "tools/execute",
    body: {
      tool: "options.greeks",
      params: { type: "call", spot: 100, strike: 100, volatility: 0.2, rate: 0.01 },
    },
    role: "authenticated",
  },
  { method: "GET", path: "auth/oauth/start", role: "authenticated" },
  {
    method: "POST",
    path: "auth/oauth/callback",
    body: { code: "a-code", state: "a-state" },
    role: "authenticated",
  },
  { method: "POST", path: "auth/logout", role: "authenticated" },
  {
    method: "POST",
    path: "discord-alert",
    body: { severity: "info", title: "t", message: "m" },
    role: "service_role",
  },
  { method: "POST", path: "discord-alert/drain", role: "service_role" },
];

/** What a bad credential must get: the status and the error code. */
type Refusal = { status: 401 | 403; code: string };
const BAD_TOKEN: Refusal = { status: 401, code: "INVALID_TOKEN" };
const WRONG_ROLE: Refusal = { status: 403, code: "ROLE_NOT_ALLOWED" };

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

/** Credentials for a route of `role`, each with the refusal it must get. */
async function credentials(stack: Stack, role: Route["role"]) {
  const key = stack.sandbox.signingKey;
  const now = Math.floor(Date.now() / 1000);
  // A user token names the project's Auth as its issuer, as hosted Supabase's do.
  const issuer = `${stack.env.SUPABASE_URL}/auth/v1`;
  const claims = role === "authenticated"
    ? { sub: crypto.randomUUID(), role, aud: "authenticated", iss: issuer }
    : { role, iss: "supabase" };
  const valid = await key.sign(claims);
  const [header, , signature] = valid.split(".");
  // Another key altogether (its own kid: not in SUPABASE_JWKS nor at the JWKS endpoint)…
  const stranger = await loadSigningKey();
  // …and another key that claims the project's kid.
  const { privateKey } = await generateKeyPair("ES256");
  const sameKid = await new SignJWT({ ...claims, iat: now, exp: now + 600 })
    .setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT" }).sign(privateKey);
  const other = role === "authenticated"
    ? { valid: await key.sign({ role: "service_role", iss: "supabase" }), name: "service-role" }
    : {
      valid: await key.sign({
        sub: crypto.randomUUID(),
        role: "authenticated",
        aud: "authenticated",
        iss: issuer,
      }),
      name: "user",
    };
  const rows: { name: string; token: string | undefined; refusal: Refusal }[] = [
    { name: "no token", token: undefined, refusal: { status: 401, code: "MISSING_TOKEN" } },
    {
      name: "forged signature (payload changed, signature kept)",
      token: `${header}.${
        b64({ ...claims, sub: crypto.randomUUID(), exp: now + 600 })
      }.${signature}`,
      refusal: BAD_TOKEN,
    },
    {
      name: "forged HS256 (a secret that is not the project's)",
      token: await sign(
        { ...claims, exp: now + 600 },
        "a-forged-secret-that-is-long-enough-to-look-real",
        "HS256",
      ),
      refusal: BAD_TOKEN,
    },
    {
      name: "expired (the project's key)",
      token: await key.sign({ ...claims, iat: now - 7200, exp: now - 60 }),
      refusal: BAD_TOKEN,
    },
    {
      name: "expired (HS256, the project's secret)",
      token: await sign({ ...claims, exp: now - 60 }, stack.jwtSecret, "HS256"),
      refusal: BAD_TOKEN,
    },
    {
      name: "alg none",
      token: `${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, exp: now + 600 })}.`,
      refusal: BAD_TOKEN,
    },
    {
      name: "alg none with the project's kid",
      token: `${b64({ alg: "none", typ: "JWT", kid: key.kid })}.${
        b64({ ...claims, exp: now + 600 })
      }.`,
      refusal: BAD_TOKEN,
    },
    {
      name: "wrong key (unknown kid)",
      token: await stranger.sign(claims),
      refusal: BAD_TOKEN,
    },
    { name: "wrong key (the project's kid)", token: sameKid, refusal: BAD_TOKEN },
    { name: `wrong role (a valid ${other.name} token)`, token: other.valid, refusal: WRONG_ROLE },
    ...(role === "authenticated"
      ? [
        {
          name: "another project's issuer (the project's key)",
          token: await key.sign({ ...claims, iss: "https://another.supabase.co/auth/v1" }),
          refusal: BAD_TOKEN,
        },
        {
          name: "wrong role (the anon key)",
          token: stack.env.SUPABASE_ANON_KEY,
          refusal: WRONG_ROLE,
        },
        {
          name: "wrong role (a service secret key)",
          token: JSON.parse(SANDBOX_SECRETS.SUPABASE_SECRET_KEYS).default,
          refusal: WRONG_ROLE,
        },
      ]
      : [
        {
          name: "wrong role (the anon key)",
          token: stack.env.SUPABASE_ANON_KEY,
          refusal: WRONG_ROLE,
        },
      ]),
  ];
  return { valid, rows };
}

/** Rows in the tables a request through these routes could write. */
async function written(stack: Stack): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (
    const table of [
      "public.orders",
      "internal.alerts",
      "internal.idempotency_keys",
      "internal.broker_tokens",
      "public.broker_connections",
    ]
  ) {
    const [{ n }] = await stack.sql.unsafe(`select count(*)::int as n from ${table}`);
    counts[table] = n;
  }
  return counts;
}

/** Requests the upstreams received. */
function upstreamCalls(stack: Stack) {
  return {
    broker: stack.sims.broker.calls.length,
    quotes: stack.sims.quotes.calls,
    discord: stack.sims.discord.requests,
    oauth: stack.sims.oauth.calls,
    auth: stack.sims.auth.calls.filter((c) => !c.includes("jwks")).length,
  };
}

function send(stack: Stack, route: Route, token: string | undefined): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (route.body !== undefined) headers["content-type"] = "application/json";
  // Over the socket, as a client sends it.
  return fetch(`${stack.server.url}/functions/v1/${route.path}`, {
    method: route.method,
    headers,
    body: route.body === undefined ? undefined : JSON.stringify(route.body),
  });
}

Deno.test("every route that needs a caller refuses forged, expired, alg:none, wrong-key and wrong-role tokens with 401/403, and nothing is written or called", async () => {
  const stack = await startStack();
  try {
    const before = { rows: await written(stack), calls: upstreamCalls(stack) };
    const failures: string[] = [];
    for (const route of ROUTES) {
      const { rows } = await credentials(stack, route.role);
      for (const row of rows) {
        const res = await send(stack, route, row.token);
        const body = await res.json().catch(() => null);
        const got = `${res.status} ${body?.error?.code}`;
        const want = `${row.refusal.status} ${row.refusal.code}`;
        if (got !== want) failures.push(`${route.method} ${route.path}, ${row.name}: ${got}`);
      }
    }
    assertEquals(failures, [], "each bad credential gets its refusal");
    assertEquals(await written(stack), before.rows, "a refused request writes nothing");
    assertEquals(upstreamCalls(stack), before.calls, "a refused request calls no upstream");

    // The control: the project's valid token of the right role gets past the guard on each route.
    for (const route of ROUTES) {
      const { valid } = await credentials(stack, route.role);
      const res = await send(stack, route, valid);
      await res.body?.cancel();
      assert(
        res.status !== 401 && res.status !== 403,
        `${route.method} ${route.path} with a valid ${route.role} token: ${res.status}`,
      );
      assert(res.status < 500, `${route.method} ${route.path}: ${res.status}`);
    }
  } finally {
    await stack.close();
  }
});

Deno.test("status shows its service-only details to none of the bad tokens, and to a service caller only", async () => {
  const stack = await startStack();
  try {
    const get = async (headers: Record<string, string>) => {
      const res = await fetch(`${stack.server.url}/functions/v1/status`, { headers });
      return { status: res.status, body: await res.json() };
    };
    const { valid, rows } = await credentials(stack, "service_role");
    for (const row of rows) {
      const headers: Record<string, string> = row.token
        ? { authorization: `Bearer ${row.token}` }
        : {};
      assertEquals(await get(headers), { status: 200, body: { status: "ok" } }, row.name);
      if (row.token) {
        assertEquals(
          await get({ apikey: row.token }),
          { status: 200, body: { status: "ok" } },
          `${row.name} in apikey`,
        );
      }
    }
    // The controls: each way a service caller presents itself sees the details.
    const secret = JSON.parse(SANDBOX_SECRETS.SUPABASE_SECRET_KEYS).default;
    for (
      const [name, headers] of [
        ["service-role JWT", { authorization: `Bearer ${valid}` }],
        ["service-role JWT in apikey", { apikey: valid }],
        ["SUPABASE_SERVICE_ROLE_KEY", {
          authorization: `Bearer ${stack.env.SUPABASE_SERVICE_ROLE_KEY}`,
        }],
        ["secret key", { apikey: secret }],
      ] as const
    ) {
      const { status, body } = await get(headers);
      assertEquals(status, 200, name);
      assertEquals(body.dependencies?.database?.state, "up", `${name}: ${JSON.stringify(body)}`);
    }
  } finally {
    await stack.close();
  }
});
