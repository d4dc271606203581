/**
 * Abuse suite: property-based tests (fast-check) send malformed input to every route — broken
 * JSON, wrong types, huge and deeply nested bodies, odd Unicode, bad headers, wrong methods and
 * content types, forged, `alg: none`, expired and wrong-audience JWTs. Whatever arrives: never a
 * 5xx other than a 503 with Retry-After, never a crash, and nothing written.
 *
 * Then text Postgres cannot take, on every route that reads it, with valid credentials so the
 * input gets past authentication: NUL characters, unpaired surrogates, impossible dates and
 * numbers with more precision than a double keeps. Each is a 4xx naming what is wrong and
 * writes nothing; a signed Stripe event carrying them is recorded and acknowledged (a 5xx would
 * make Stripe retry it for three days).
 */
import fc from "fast-check";
import { sign } from "hono/jwt";
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import {
  checkoutCompleted,
  delivery,
  envelope,
  stripeId,
  subscriptionEvent,
} from "../functions/payment-webhook/stripe_events.ts";
import { type Stack, startStack } from "../support/stack.ts";

const ROUTES: { path: string; methods: string[] }[] = [
  { path: "payment-webhook", methods: ["POST"] },
  { path: "broker-order", methods: ["GET", "POST"] },
  { path: "auth/login", methods: ["POST"] },
  { path: "auth/refresh", methods: ["POST"] },
  { path: "auth/logout", methods: ["POST"] },
  { path: "auth/oauth/start", methods: ["GET"] },
  { path: "auth/oauth/callback", methods: ["POST"] },
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

/** Strings Postgres `text` refuses (NUL) or that are not Unicode (unpaired surrogates). */
const BAD_TEXT = ["\u0000", "a\u0000b", "\ud800", "x\udfff", "\udbff\u0000", "\ude00AAPL"];

/** Dates no calendar has, or Postgres cannot hold. */
const BAD_DATES = [
  "2026-02-30T00:00:00Z",
  "2025-02-29T12:00:00Z",
  "2026-04-31T00:00:00.000000Z",
  "2026-13-01T00:00:00Z",
  "2100-02-29T00:00:00Z", // 2100 is not a leap year
  "2026-00-10T00:00:00Z",
  "2026-06-31T08:00:00+02:00",
  "0000-01-01T00:00:00.000000Z",
  "+275760-09-13T00:00:00.000Z",
  "2026-01-01T00:00:00\u0000Z",
];

/** JSON number literals a double cannot hold as written. */
const BAD_NUMBERS = [
  "9999999.999999999",
  "100000000.0000000001",
  "1e400",
  "-1e400",
  "0.30000000000000000001",
  "123456789012345678901234567890",
];

/** `JSON.stringify(value)` with each `"@n@"` placeholder replaced by a raw number literal. */
function rawJson(value: unknown, numbers: Record<string, string> = {}): string {
  let text = JSON.stringify(value);
  for (const [name, literal] of Object.entries(numbers)) {
    text = text.replace(`"@${name}@"`, literal);
  }
  return text;
}

Deno.test({
  name:
    "NUL bytes, unpaired surrogates, impossible dates and over-precise numbers get a 4xx on every route that reads them, and a signed webhook acknowledges them",
  async fn() {
    const stack = await startStack();
    const findings: string[] = [];
    const statuses = new Map<number, number>();
    try {
      const user = `Bearer ${await stack.userToken()}`;
      const service = `Bearer ${await stack.serviceToken()}`;
      const json = { "content-type": "application/json" };
      let keys = 0;
      const send = async (label: string, path: string, init: RequestInit) => {
        const res = await stack.server.call(path, { redirect: "manual", ...init });
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        return { label, status: res.status, text, headers: res.headers };
      };
      /** A refusal: 4xx with the contract's error body (429 is fine: a limit also refuses). */
      const refused = async (label: string, path: string, init: RequestInit) => {
        const r = await send(label, path, init);
        if (r.status < 400 || r.status >= 500) {
          findings.push(`${label}: ${r.status} ${r.text.slice(0, 200)}`);
          return;
        }
        const err = JSON.parse(r.text).error;
        if (!/^[A-Z_]+$/.test(err?.code ?? "")) findings.push(`${label}: no error code ${r.text}`);
      };
      const post = (headers: Record<string, string>, body: string): RequestInit => ({
        method: "POST",
        headers: { ...json, ...headers },
        body,
      });

      // auth: every body field.
      for (const bad of BAD_TEXT) {
        const ip = { "x-forwarded-for": `192.0.2.${keys++ % 250}` };
        await refused(
          `login email ${JSON.stringify(bad)}`,
          "auth/login",
          post(ip, rawJson({ email: `alice${bad}@example.com`, password: "x" })),
        );
        await refused(
          `login password ${JSON.stringify(bad)}`,
          "auth/login",
          post(ip, rawJson({ email: "alice@example.com", password: `pw${bad}` })),
        );
        await refused(
          `refresh ${JSON.stringify(bad)}`,
          "auth/refresh",
          post(ip, rawJson({ refresh_token: `rt${bad}` })),
        );
        await refused(
          `oauth callback ${JSON.stringify(bad)}`,
          "auth/oauth/callback",
          post({ authorization: user }, rawJson({ code: `c${bad}`, state: `s${bad}` })),
        );
      }
      for (const n of BAD_NUMBERS) {
        await refused(
          `login number ${n}`,
          "auth/login",
          post(
            { "x-forwarded-for": "192.0.2.251" },
            rawJson({ email: "@n@", password: "x" }, { n }),
          ),
        );
      }

      // broker-order: the body's strings and numbers, and the listing's cursor and limit.
      const order = {
        symbol: "AAPL",
        side: "buy",
        type: "limit",
        qty: 1,
        limit_price: 100,
        time_in_force: "day",
        note: "ok",
      };
      const orderPost = (body: string) =>
        post({ authorization: user, "idempotency-key": `abuse-text-${keys++}` }, body);
      for (const bad of BAD_TEXT) {
        for (const field of ["symbol", "side", "time_in_force", "note"]) {
          await refused(
            `order ${field} ${JSON.stringify(bad)}`,
            "broker-order",
            orderPost(
              rawJson({ ...order, [field]: `${(order as Record<string, unknown>)[field]}${bad}` }),
            ),
          );
        }
        await refused(
          `order key ${JSON.stringify(bad)}`,
          "broker-order",
          orderPost(rawJson({ ...order, [`k${bad}`]: 1 })),
        );
      }
      // A decimal field may also keep the number exactly as written (contract: "400, or kept
      // exactly"): then the order echoes the literal's digits, never a rounded double.
      let keptExactly = 0;
      const refusedOrExact = async (
        label: string,
        field: string,
        literal: string,
        body: string,
      ) => {
        const r = await send(label, "broker-order", orderPost(body));
        if (r.status === 201) {
          const placed = JSON.parse(r.text);
          const camel = field.replace(/_(\w)/g, (_, ch: string) => ch.toUpperCase());
          const echoed = String(placed[field] ?? placed[camel]);
          if (echoed === literal) {
            keptExactly++;
            return;
          }
          findings.push(`${label}: placed with ${field} ${echoed}, not as sent`);
        } else if (r.status < 400 || r.status >= 500) {
          findings.push(`${label}: ${r.status} ${r.text.slice(0, 200)}`);
        }
      };
      for (const n of BAD_NUMBERS) {
        for (const field of ["qty", "limit_price"]) {
          await refusedOrExact(
            `order ${field} ${n}`,
            field,
            n,
            rawJson({ ...order, [field]: "@n@" }, { n }),
          );
        }
        await refusedOrExact(
          `order notional ${n}`,
          "notional",
          n,
          rawJson({
            ...order,
            qty: undefined,
            type: "market",
            limit_price: undefined,
            notional: "@n@",
          }, { n }),
        );
      }
      const id = "00000000-0000-4000-8000-000000000000";
      const cursors = [
        ...BAD_DATES.map((d) => `${d.replace(/(\.\d+)?Z$/, ".000000Z")}_${id}`),
        `2026-01-01T00:00:00.000000Z_${id}\u0000`,
        "\u0000",
      ];
      for (const before of cursors) {
        await refused(
          `cursor ${JSON.stringify(before)}`,
          `broker-order?before=${encodeURIComponent(before)}`,
          { headers: { authorization: user } },
        );
      }
      for (const limit of ["1.0000000000000001", "1e400", "%00", "1%00", "%ED%A0%80"]) {
        await refused(`limit ${limit}`, `broker-order?limit=${limit}`, {
          headers: { authorization: user },
        });
      }
      await refused("cursor CESU surrogate", "broker-order?before=%ED%A0%80", {
        headers: { authorization: user },
      });

      // market-data: the symbols.
      for (
        const symbols of [
          "AAPL%00",
          "%00",
          "AAPL,MSFT%00",
          "A%ED%A0%80",
          "%ED%B0%80AAPL",
          "AAPL%C0%80",
        ]
      ) {
        await refused(`symbols ${symbols}`, `market-data?symbols=${symbols}`, {
          headers: { authorization: user },
        });
      }

      // discord-alert: every body field.
      const alert = { severity: "info", title: "t", message: "m", dedupKey: "k" };
      for (const bad of BAD_TEXT) {
        for (const field of Object.keys(alert)) {
          await refused(
            `alert ${field} ${JSON.stringify(bad)}`,
            "discord-alert",
            post(
              { authorization: service },
              rawJson({ ...alert, [field]: `${(alert as Record<string, string>)[field]}${bad}` }),
            ),
          );
        }
      }
      for (const n of BAD_NUMBERS) {
        await refused(
          `alert number ${n}`,
          "discord-alert",
          post({ authorization: service }, rawJson({ ...alert, title: "@n@" }, { n })),
        );
      }

      // tools: dates, numbers and strings in the parameters.
      const greeks = { type: "call", spot: 100, strike: 100, volatility: 0.2, rate: 0.01 };
      const backtest = {
        symbol: "AAPL",
        timeframe: "1Day",
        start: "2026-01-01T00:00:00Z",
        end: "2026-02-01T00:00:00Z",
        strategy: { kind: "buy_and_hold" },
        initialCash: 1000,
      };
      const execute = (tool: string, params: unknown, numbers: Record<string, string> = {}) =>
        post({ authorization: user }, rawJson({ tool, params }, numbers));
      for (const date of BAD_DATES) {
        await refused(
          `greeks expiresAt ${date}`,
          "tools/execute",
          execute("options.greeks", { ...greeks, expiresAt: date }),
        );
        await refused(
          `backtest start ${date}`,
          "tools/execute",
          execute("backtest.run", { ...backtest, start: date }),
        );
        await refused(
          `backtest end ${date}`,
          "tools/execute",
          execute("backtest.run", { ...backtest, end: date }),
        );
      }
      for (const n of BAD_NUMBERS) {
        await refused(
          `greeks spot ${n}`,
          "tools/execute",
          execute("options.greeks", { ...greeks, timeToExpiryYears: 1, spot: "@n@" }, { n }),
        );
      }
      for (const bad of BAD_TEXT) {
        await refused(
          `tool name ${JSON.stringify(bad)}`,
          "tools/execute",
          execute(`options.greeks${bad}`, { ...greeks, timeToExpiryYears: 1 }),
        );
        await refused(
          `backtest symbol ${JSON.stringify(bad)}`,
          "tools/execute",
          execute("backtest.run", { ...backtest, symbol: `AAPL${bad}` }),
        );
      }

      // payment-webhook: a signed event is Stripe's word; odd text in it is recorded and
      // acknowledged (2xx), never a 5xx that Stripe would retry for three days.
      const secret = SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET;
      const acknowledged = async (label: string, body: string) => {
        const r = await send(label, "payment-webhook", await delivery(undefined, secret, { body }));
        if (r.status >= 300) findings.push(`webhook ${label}: ${r.status} ${r.text.slice(0, 200)}`);
      };
      const userId = crypto.randomUUID();
      const subscription = (periodEnd: unknown = Math.floor(Date.now() / 1000) + 30 * 86400) => {
        const event = subscriptionEvent("updated", {
          subscription: stripeId("sub"),
          customer: stripeId("cus"),
          status: "active",
          periodEnd: 0,
          userId,
        });
        const object = event.data.object as { items: { data: Record<string, unknown>[] } };
        object.items.data[0].current_period_end = periodEnd;
        return { event, object: object as unknown as Record<string, unknown> };
      };
      for (const bad of BAD_TEXT) {
        const event = checkoutCompleted({ userId });
        await acknowledged(
          `id ${JSON.stringify(bad)}`,
          rawJson({ ...event, id: `${event.id}${bad}` }),
        );
        await acknowledged(
          `type ${JSON.stringify(bad)}`,
          rawJson({ ...event, type: `checkout.session.completed${bad}` }),
        );
        const object = event.data.object as Record<string, unknown>;
        await acknowledged(
          `client_reference_id ${JSON.stringify(bad)}`,
          rawJson({
            ...event,
            data: {
              object: { ...object, client_reference_id: `${userId}${bad}`, currency: `usd${bad}` },
            },
          }),
        );
        const sub = subscription();
        await acknowledged(
          `subscription status ${JSON.stringify(bad)}`,
          rawJson({ ...sub.event, data: { object: { ...sub.object, status: `active${bad}` } } }),
        );
      }
      for (const n of [...BAD_NUMBERS, "99999999999999", "-99999999999999"]) {
        const event = checkoutCompleted({ userId });
        const object = event.data.object as Record<string, unknown>;
        await acknowledged(
          `amount_total ${n}`,
          rawJson({ ...event, data: { object: { ...object, amount_total: "@n@" } } }, { n }),
        );
        await acknowledged(`created ${n}`, rawJson({ ...event, created: "@n@" }, { n }));
        const sub = subscription("@n@");
        await acknowledged(`current_period_end ${n}`, rawJson(sub.event, { n }));
      }
      await acknowledged(
        "unknown type with a NUL",
        rawJson(envelope("nothing.we.know\u0000", { id: "x\u0000" })),
      );

      // Nothing was written by any refused request (webhook events are recorded on purpose).
      const expected: Record<string, number> = {
        "public.orders": keptExactly,
        "internal.idempotency_keys": keptExactly,
      };
      for (
        const table of [
          "public.orders",
          "public.broker_connections",
          "internal.idempotency_keys",
          "internal.alerts",
          "internal.broker_tokens",
        ]
      ) {
        const [{ n }] = await stack.sql.unsafe(`select count(*)::int as n from ${table}`);
        if (n !== (expected[table] ?? 0)) findings.push(`${table} was written to (${n} rows)`);
      }
      const unhandled = stack.server.logs.filter((l) => l.includes("unhandled error"));
      if (unhandled.length) {
        findings.push(`unhandled errors logged: ${unhandled.slice(0, 3).join("\n")}`);
      }
      assertEquals((await stack.server.call("status")).status, 200);
    } finally {
      await stack.close();
    }
    console.log(
      `bad text: answers by status ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
    );
    assertEquals(findings, [], `\n${findings.join("\n")}`);
  },
});
