import { Hono } from "hono";
import { sign } from "hono/jwt";
import { assertEquals } from "@std/assert";
import { errorParts } from "../../shared/errors.ts";
import { requireJwt } from "../../shared/jwt.ts";
import { JWT_SECRET, serviceToken, userToken } from "../support/env.ts";

function app(role: "authenticated" | "service_role") {
  const a = new Hono<{ Variables: { claims: { sub?: string } } }>();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(requireJwt({ secret: JWT_SECRET, role }));
  a.get("/", (c) => c.json({ sub: c.var.claims.sub ?? null }));
  return a;
}

const call = (role: "authenticated" | "service_role", auth?: string) =>
  app(role).fetch(new Request("http://fn/", { headers: auth ? { authorization: auth } : {} }));

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
const now = () => Math.floor(Date.now() / 1000);

Deno.test("requireJwt() accepts a user token and exposes its subject", async () => {
  const sub = crypto.randomUUID();
  const res = await call("authenticated", `Bearer ${await userToken(sub)}`);
  assertEquals(res.status, 200);
  assertEquals((await res.json()).sub, sub);
});

Deno.test("requireJwt() answers 401 without a token or with a malformed header", async () => {
  for (
    const auth of [undefined, "Bearer", "Basic abc", "Bearer not-a-jwt", `Bearer ${"a".repeat(20)}`]
  ) {
    const res = await call("authenticated", auth);
    assertEquals(res.status, 401, String(auth));
    assertEquals(res.headers.get("www-authenticate"), "Bearer");
  }
});

Deno.test("requireJwt() refuses alg none, a forged signature, an expired and a wrong-audience token", async () => {
  const sub = crypto.randomUUID();
  const claims = { sub, role: "authenticated", aud: "authenticated", exp: now() + 60 };
  const none = `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
  const forged = await sign(claims, "another-secret-that-is-at-least-32-characters", "HS256");
  const expired = await sign({ ...claims, exp: now() - 10 }, JWT_SECRET, "HS256");
  const wrongAud = await sign({ ...claims, aud: "somebody-else" }, JWT_SECRET, "HS256");
  const noExp = await sign(
    { sub, role: "authenticated", aud: "authenticated" },
    JWT_SECRET,
    "HS256",
  );
  const hs512 = await sign(claims, JWT_SECRET, "HS512");
  const valid = await userToken(sub);
  const [h, p, s] = valid.split(".");
  const tampered = `${h}.${b64({ ...claims, sub: crypto.randomUUID() })}.${s}`;
  void p;
  for (
    const [name, token] of Object.entries({
      none,
      forged,
      expired,
      wrongAud,
      noExp,
      hs512,
      tampered,
    })
  ) {
    const res = await call("authenticated", `Bearer ${token}`);
    assertEquals(res.status, 401, name);
    assertEquals((await res.json()).error.code, "INVALID_TOKEN", name);
  }
});

Deno.test("requireJwt() answers 403 to a valid token of the wrong role", async () => {
  assertEquals((await call("service_role", `Bearer ${await userToken()}`)).status, 403);
  assertEquals((await call("authenticated", `Bearer ${await serviceToken()}`)).status, 403);
  assertEquals((await call("service_role", `Bearer ${await serviceToken()}`)).status, 200);
});
