/**
 * Abuse suite: property-based tests (fast-check) send malformed input to every route — broken
 * JSON, wrong types, huge and deeply nested bodies, odd Unicode, bad headers, wrong methods and
 * content types, forged, `alg: none`, expired and wrong-audience JWTs. Whatever arrives: never a
 * 5xx other than a 503 with Retry-After, never a crash, and nothing written.
 */
import fc from "fast-check";
import { sign } from "hono/jwt";
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { type Stack, startStack } from "../support/stack.ts";

const ROUTES: { path: string; methods: string[] }[] = [
  { path: "payment-webhook", methods: ["POST"] },
  { path: "broker-order", methods: ["GET", "POST"] },
  { path: "auth/login", methods: ["POST"] },
  { path: "auth/refresh", methods: ["POST"] },
  { path: "auth/logout", methods: ["POST"] },
  { path: "auth/oauth/start", methods: ["GET"] },
  { path: "auth/oauth/callback", methods: ["GET"] },
  { path: "market-data", methods: ["GET"] },
  { path: "discord-alert", methods: ["POST"] },
  { path: "discord-alert/drain", methods: ["POST"] },
  { path: "status", methods: ["GET"] },
];

/** Tables a request could write to; all must stay empty. */
const TABLES = [
  "public.orders",
  "public.purchases",
  "public.subscriptions",
  "public.broker_connections",
  "internal.stripe_events",
  "internal.idempotency_keys",
  "internal.alerts",
  "internal.broker_tokens",
];

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

async function badTokens(stack: Stack): Promise<string[]> {
  const secret = stack.jwtSecret;
  const now = Math.floor(Date.now() / 1000);
  const sub = crypto.randomUUID();
  const claims = { sub, role: "authenticated", aud: "authenticated", exp: now + 600 };
  const valid = await stack.userToken(sub);
  const [h, , s] = valid.split(".");
  return [
    `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`,
    `${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, role: "service_role" })}.`,
    await sign(claims, "a-forged-secret-that-is-long-enough-to-look-real", "HS256"),
    await sign({ ...claims, exp: now - 60 }, secret, "HS256"),
    await sign({ ...claims, aud: "somebody-else" }, secret, "HS256"),
    await sign({ ...claims, sub: "not-a-uuid" }, secret, "HS256"),
    await sign({ ...claims, role: "service_role", exp: now - 60 }, secret, "HS256"),
    `${h}.${b64({ ...claims, role: "service_role" })}.${s}`,
    "not.a.jwt",
    "",
  ];
}

/** Header values fetch can send: visible ASCII and Latin-1, no control characters. */
const headerValue = fc.string({
  unit: fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0xa0, max: 0xff })).map((
    c,
  ) => String.fromCharCode(c)),
  maxLength: 300,
});

const nested = fc.integer({ min: 1, max: 200_000 }).chain((depth) =>
  fc.constantFrom(
    "[".repeat(depth) + "]".repeat(depth),
    '{"a":'.repeat(depth) + "1" + "}".repeat(depth),
    "[".repeat(depth),
  )
);

const body = fc.oneof(
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ unit: "binary", maxLength: 2000 }),
  fc.string({ unit: "grapheme-composite", maxLength: 500 }).map((s) =>
    JSON.stringify({ symbol: s, email: s, title: s, message: s, note: s })
  ),
  nested,
  fc.integer({ min: 10_000, max: 2_000_000 }).map((n) =>
    JSON.stringify({ message: "x".repeat(n) })
  ),
  fc.record({
    symbol: fc.oneof(fc.string(), fc.constant("AAPL"), fc.integer()),
    side: fc.oneof(fc.constantFrom("buy", "sell", "hold"), fc.integer()),
    type: fc.oneof(fc.constantFrom("market", "limit", "stop", "stop_limit", "moon"), fc.boolean()),
    qty: fc.oneof(
      fc.double(),
      fc.string(),
      fc.constant("1e308"),
      fc.constant("-1"),
      fc.constant("0.0000000001"),
    ),
    time_in_force: fc.string(),
    severity: fc.oneof(fc.constantFrom("info", "critical"), fc.string()),
    email: fc.emailAddress(),
    password: fc.string(),
  }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
  fc.constant(""),
  fc.constant("null"),
  fc.constant('{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}}}'),
);

const contentType = fc.constantFrom(
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/json; charset=utf-16",
  "",
);

const query = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 300 }).map((s) => `?symbols=${encodeURIComponent(s)}`),
  fc.array(fc.constantFrom("AAPL", "MSFT", "brk.b", "A".repeat(11), "", ",", "😀"), {
    maxLength: 80,
  }).map((a) => `?symbols=${a.join(",")}`),
  fc.tuple(fc.string(), fc.string()).map(([c, s]) =>
    `?code=${encodeURIComponent(c)}&state=${encodeURIComponent(s)}`
  ),
  fc.string({ maxLength: 100 }).map((s) =>
    `?limit=${encodeURIComponent(s)}&before=${encodeURIComponent(s)}`
  ),
);

Deno.test({
  name:
    "malformed input on every route never gets a 5xx other than 503, never crashes, and writes nothing",
  async fn() {
    const stack = await startStack();
    try {
      const tokens = await badTokens(stack);
      const serviceToken = await stack.serviceToken();
      const userToken = await stack.userToken();
      const origin = fc.oneof(
        { weight: 6, arbitrary: fc.constant(undefined) },
        { weight: 3, arbitrary: fc.constant(stack.frontend) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            "https://app.example.com.evil.test",
            "null",
            "http://localhost:5173.evil.test",
          ),
        },
      );
      const authorization = fc.oneof(
        fc.constant(undefined),
        fc.constantFrom(...tokens).map((t) => `Bearer ${t}`),
        headerValue,
        // Valid tokens with malformed bodies exercise the validation behind authentication.
        { weight: 3, arbitrary: fc.constantFrom(`Bearer ${serviceToken}`, `Bearer ${userToken}`) },
      );
      const request = fc.record({
        route: fc.constantFrom(...ROUTES),
        wrongMethod: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
        method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
        body,
        contentType,
        query,
        authorization,
        origin,
        idempotencyKey: fc.option(headerValue, { nil: undefined }),
        requestId: fc.option(headerValue, { nil: undefined }),
        stripeSignature: fc.option(fc.oneof(headerValue, fc.constant("t=1,v1=abc")), {
          nil: undefined,
        }),
      });
      const seen = new Map<number, number>();
      await fc.assert(
        fc.asyncProperty(request, async (r) => {
          const method = r.wrongMethod ? r.method : r.route.methods[0];
          const headers = new Headers();
          if (r.contentType) headers.set("content-type", r.contentType);
          if (r.authorization !== undefined) headers.set("authorization", r.authorization);
          if (r.origin) headers.set("origin", r.origin);
          if (r.idempotencyKey !== undefined) headers.set("idempotency-key", r.idempotencyKey);
          if (r.requestId !== undefined) headers.set("x-request-id", r.requestId);
          if (r.stripeSignature !== undefined) headers.set("stripe-signature", r.stripeSignature);
          const res = await stack.server.call(`${r.route.path}${r.query}`, {
            method,
            headers,
            redirect: "manual",
            body: method === "GET" || method === "HEAD" ? undefined : r.body,
          });
          const text = await res.text();
          seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
          if (res.status >= 500) {
            assertEquals(
              res.status,
              503,
              `${method} ${r.route.path}: ${res.status} ${text.slice(0, 300)}`,
            );
            assert(res.headers.get("retry-after"), "a 503 carries Retry-After");
          }
          assert(res.headers.get("x-request-id"), "every answer has a request id");
          if (res.status >= 400 && text) {
            const parsed = JSON.parse(text);
            assert(/^[A-Z_]+$/.test(parsed.error.code), text.slice(0, 200));
            assert(
              !/\bat \S+\.ts:\d+|select |insert |stack/i.test(text),
              `leaks internals: ${text.slice(0, 300)}`,
            );
          }
        }),
        { numRuns: Number(Deno.env.get("ABUSE_RUNS") ?? 400), endOnFailure: true },
      );
      // Still alive and healthy, and nothing was written anywhere.
      assertEquals((await stack.server.call("status")).status, 200);
      for (const table of TABLES) {
        const [{ n }] = await stack.sql.unsafe(`select count(*)::int as n from ${table}`);
        assertEquals(n, 0, `${table} was written to`);
      }
      assert(seen.size > 3, `a variety of answers: ${JSON.stringify([...seen])}`);
      console.log(
        `abuse: answers by status ${JSON.stringify(Object.fromEntries([...seen].sort()))}`,
      );
      // And no log line carries a token or a secret, whatever the requests held.
      const logs = stack.server.logs.join("\n");
      assert(!/eyJ[\w-]+\.[\w-]+/.test(logs), "a JWT reached the logs");
      for (const secret of [stack.jwtSecret, ...Object.values(SANDBOX_SECRETS)]) {
        assert(!logs.includes(secret), `a secret reached the logs: ${secret.slice(0, 6)}…`);
      }
    } finally {
      await stack.close();
    }
  },
});
