import { Hono } from "hono";
import { sign } from "hono/jwt";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { assert, assertEquals } from "@std/assert";
import { errorParts } from "../../../shared/errors.ts";
import {
  requireJwt,
  type Role,
  TokenVerifier,
  type TokenVerifierOptions,
} from "../../../shared/auth/jwt.ts";
import { JWT_SECRET, serviceToken, userToken } from "../../support/env.ts";

const SECRET_KEY = "sb_secret_test_0123456789abcdefghij";
const SERVICE_ROLE_KEY = "service-role-key-opaque-0123456789";

/** A project signing key, as hosted Supabase's JWKS publishes it. */
async function signingKey(alg: "ES256" | "RS256", kid: string) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...await exportJWK(publicKey), kid, alg, use: "sig" };
  const signWith = (claims: Record<string, unknown>, ttl: number | null = 3600) => {
    const jwt = new SignJWT(claims).setProtectedHeader({ alg, kid, typ: "JWT" }).setIssuedAt();
    if (ttl !== null) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
    return jwt.sign(privateKey);
  };
  return { jwk, sign: signWith };
}

const es = await signingKey("ES256", "key-1");
const rs = await signingKey("RS256", "key-2");
/** Another key under the same kid: its tokens must not verify. */
const impostor = await signingKey("ES256", "key-1");

const user = (sub = crypto.randomUUID()) => ({
  iss: "http://project.test/auth/v1",
  sub,
  role: "authenticated",
  aud: "authenticated",
});

function app(role: Role, opts: Partial<TokenVerifierOptions> = {}) {
  const tokens = new TokenVerifier({
    jwks: { keys: [es.jwk, rs.jwk] },
    serviceKeys: [SERVICE_ROLE_KEY, SECRET_KEY],
    ...opts,
  });
  const a = new Hono<{ Variables: { claims: { sub?: string } } }>();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(requireJwt({ tokens, role }));
  a.get("/", (c) => c.json({ sub: c.var.claims.sub ?? null }));
  return a;
}

const call = (a: Hono<never>, headers: Record<string, string> = {}) =>
  a.fetch(new Request("http://fn/", { headers }));
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
const now = () => Math.floor(Date.now() / 1000);

Deno.test("requireJwt() accepts ES256 and RS256 user tokens from the JWKS and exposes the subject", async () => {
  const a = app("authenticated") as unknown as Hono<never>;
  for (const key of [es, rs]) {
    const sub = crypto.randomUUID();
    const res = await call(a, bearer(await key.sign(user(sub))));
    assertEquals(res.status, 200);
    assertEquals((await res.json()).sub, sub);
  }
});

Deno.test("requireJwt() takes the Authorization scheme case-insensitively", async () => {
  const a = app("authenticated") as unknown as Hono<never>;
  const token = await es.sign(user());
  for (const scheme of ["bearer", "BEARER", "Bearer"]) {
    assertEquals((await call(a, { authorization: `${scheme} ${token}` })).status, 200, scheme);
  }
});

Deno.test("requireJwt() answers 401 without a token or with a malformed header", async () => {
  const a = app("authenticated") as unknown as Hono<never>;
  for (
    const auth of [undefined, "Bearer", "Basic abc", "Bearer not-a-jwt", `Bearer ${"a".repeat(20)}`]
  ) {
    const res = await call(a, auth ? { authorization: auth } : {});
    assertEquals(res.status, 401, String(auth));
    assertEquals(res.headers.get("www-authenticate"), "Bearer");
  }
});

Deno.test("requireJwt() refuses HS256 without a secret, another key under the same kid, alg none, expired, no exp and a wrong audience", async () => {
  const a = app("authenticated") as unknown as Hono<never>;
  const claims = { ...user(), exp: now() + 60 };
  const tokens = {
    hs256WithoutSecret: await sign(claims, JWT_SECRET, "HS256"),
    sameKidOtherKey: await impostor.sign(user()),
    none: `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`,
    expired: await es.sign(user(), -10),
    wrongAud: await es.sign({ ...user(), aud: "somebody-else" }),
    noExp: await es.sign(user(), null),
    unknownKid: await (await signingKey("ES256", "key-9")).sign(user()),
    tampered: await (async () => {
      const [h, , s] = (await es.sign(user())).split(".");
      return `${h}.${b64({ ...claims, sub: crypto.randomUUID() })}.${s}`;
    })(),
  };
  for (const [name, token] of Object.entries(tokens)) {
    const res = await call(a, bearer(token));
    assertEquals(res.status, 401, name);
    assertEquals((await res.json()).error.code, "INVALID_TOKEN", name);
  }
});

Deno.test("requireJwt() accepts HS256 only with the legacy secret, and no other HMAC algorithm", async () => {
  const a = app("authenticated", { hmacSecret: JWT_SECRET }) as unknown as Hono<never>;
  const claims = { ...user(), exp: now() + 60 };
  assertEquals((await call(a, bearer(await userToken()))).status, 200);
  assertEquals((await call(a, bearer(await sign(claims, JWT_SECRET, "HS512")))).status, 401);
  const forged = await sign(claims, "another-secret-that-is-at-least-32-characters", "HS256");
  assertEquals((await call(a, bearer(forged))).status, 401);
});

Deno.test("requireJwt() answers 403 to a valid token or key of the wrong role", async () => {
  const service = app("service_role", { hmacSecret: JWT_SECRET }) as unknown as Hono<never>;
  const users = app("authenticated", { hmacSecret: JWT_SECRET }) as unknown as Hono<never>;
  assertEquals((await call(service, bearer(await es.sign(user())))).status, 403);
  assertEquals((await call(users, bearer(await es.sign({ role: "service_role" })))).status, 403);
  assertEquals((await call(users, bearer(await serviceToken()))).status, 403);
  assertEquals((await call(users, bearer(SECRET_KEY))).status, 403);
});

Deno.test("service callers: a service-role JWT, the service-role key or an sb_secret_ key, in Authorization or apikey", async () => {
  const a = app("service_role") as unknown as Hono<never>;
  const jwt = await es.sign({ role: "service_role", iss: "supabase" });
  for (const credential of [jwt, SERVICE_ROLE_KEY, SECRET_KEY]) {
    assertEquals((await call(a, bearer(credential))).status, 200);
    assertEquals((await call(a, { apikey: credential })).status, 200);
  }
  for (const wrong of [SECRET_KEY.slice(0, -1) + "x", SECRET_KEY + "x", "sb_secret_"]) {
    assertEquals((await call(a, bearer(wrong))).status, 401, wrong);
    assertEquals((await call(a, { apikey: wrong })).status, 401, wrong);
  }
});

Deno.test("the JWKS endpoint is fetched once, refetched for an unknown kid at most once per cooldown, and its outage fails only those tokens with 503", async () => {
  let fetches = 0;
  let up = true;
  let keys = [es.jwk];
  const jwksFetch: typeof fetch = (input) => {
    fetches++;
    assertEquals(String(input), "http://project.test/auth/v1/.well-known/jwks.json");
    if (!up) return Promise.reject(new TypeError("connection refused"));
    return Promise.resolve(Response.json({ keys }));
  };
  const a = app("authenticated", {
    jwks: undefined,
    supabaseUrl: "http://project.test",
    fetch: jwksFetch,
    cooldownMs: 60_000,
  }) as unknown as Hono<never>;
  // Booting fetched nothing.
  assertEquals(fetches, 0);
  for (let i = 0; i < 3; i++) {
    assertEquals((await call(a, bearer(await es.sign(user())))).status, 200);
  }
  assertEquals(fetches, 1);
  // A token under a kid the set lacks refetches once; within the cooldown, not again.
  keys = [es.jwk, rs.jwk];
  const rotated = await rs.sign(user());
  assertEquals((await call(a, bearer(rotated))).status, 401);
  assertEquals((await call(a, bearer(rotated))).status, 401);
  assertEquals(fetches, 1, "within the cooldown the endpoint is not asked again");

  // An unreachable endpoint: a fresh verifier cannot get keys and answers 503, not 401 or 500.
  up = false;
  const down = app("authenticated", {
    jwks: undefined,
    supabaseUrl: "http://project.test",
    fetch: jwksFetch,
  }) as unknown as Hono<never>;
  const res = await call(down, bearer(await es.sign(user())));
  assertEquals(res.status, 503);
  assertEquals((await res.json()).error.code, "AUTH_KEYS_UNAVAILABLE");
  assertEquals(res.headers.has("retry-after"), true);
  // Service keys need no JWKS.
  const service = app("service_role", {
    jwks: undefined,
    supabaseUrl: "http://project.test",
    fetch: jwksFetch,
  }) as unknown as Hono<never>;
  assertEquals((await call(service, bearer(SECRET_KEY))).status, 200);
});

Deno.test("with a configured JWKS, a token whose kid it lacks is looked up at the endpoint (key rotation)", async () => {
  let fetches = 0;
  const a = app("authenticated", {
    jwks: { keys: [es.jwk] },
    supabaseUrl: "http://project.test",
    fetch: () => {
      fetches++;
      return Promise.resolve(Response.json({ keys: [es.jwk, rs.jwk] }));
    },
  }) as unknown as Hono<never>;
  assertEquals((await call(a, bearer(await es.sign(user())))).status, 200);
  assertEquals(fetches, 0, "a key in SUPABASE_JWKS needs no network call");
  assertEquals((await call(a, bearer(await rs.sign(user())))).status, 200);
  assertEquals(fetches, 1);
});

Deno.test("a verified token is remembered until its exp: the same claims again, the role still checked, then 401 once expired", async () => {
  const tokens = new TokenVerifier({ jwks: { keys: [es.jwk] } });
  const sub = crypto.randomUUID();
  const exp = now() + 2;
  const token = await es.sign({ ...user(sub), exp }, null);
  const first = await tokens.verify(token, "authenticated");
  const again = await tokens.verify(token, "authenticated");
  assert(again === first, "remembered, not verified again");
  assert(Object.isFrozen(first));
  assertEquals(first.sub, sub);
  const wrongRole = await tokens.verify(token, "service_role").catch((e) => e);
  assertEquals(wrongRole.status, 403, "the role is checked on every call");
  // A tampered copy is another text: verified (and refused), never taken for the remembered one.
  const [h, , s] = token.split(".");
  const tampered = `${h}.${b64({ ...user(), exp })}.${s}`;
  assertEquals((await tokens.verify(tampered, "authenticated").catch((e) => e)).status, 401);
  // Past exp (jose's rule: valid while now < exp), the token is refused like any expired one.
  await new Promise((r) => setTimeout(r, exp * 1000 - Date.now() + 20));
  const expired = await tokens.verify(token, "authenticated").catch((e) => e);
  assertEquals([expired.status, expired.code], [401, "INVALID_TOKEN"]);
});

Deno.test("a user token verified against the JWKS must name $SUPABASE_URL/auth/v1 as its issuer", async () => {
  for (
    const supabaseUrl of ["http://project.test", "http://project.test/", "http://project.test//"]
  ) {
    const a = app("authenticated", { supabaseUrl }) as unknown as Hono<never>;
    assertEquals((await call(a, bearer(await es.sign(user())))).status, 200, supabaseUrl);
    for (
      const iss of [
        undefined,
        "http://other.test/auth/v1",
        "http://project.test",
        "http://project.test/auth/v1/",
        "HTTP://PROJECT.TEST/auth/v1",
        "supabase",
      ]
    ) {
      for (const key of [es, rs]) {
        const res = await call(a, bearer(await key.sign({ ...user(), iss })));
        assertEquals(res.status, 401, `iss ${iss}`);
        assertEquals((await res.json()).error.code, "INVALID_TOKEN");
      }
    }
  }
  // A service-role JWT keeps Supabase's own `iss: "supabase"`.
  const service = app("service_role", { supabaseUrl: "http://project.test" });
  const token = await es.sign({ role: "service_role", iss: "supabase" });
  assertEquals((await call(service as unknown as Hono<never>, bearer(token))).status, 200);
});
