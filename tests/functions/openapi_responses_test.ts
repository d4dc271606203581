/**
 * What the functions answer matches docs/openapi.json: every route of the document, driven
 * through the real local server with the sandbox's simulators, its success and each error a test
 * can provoke (credentials, role, origin, content type, body size, validation, idempotency, rate
 * limits, upstream failures, the broker's refusal, an unknown outcome), each answer validated
 * against the document (status, body by Ajv's 2020-12 dialect, documented headers:
 * tests/support/openapi.ts). And the document covers every route this test drives, and every
 * documented route is driven.
 */
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_USER } from "../../local/sandbox/index.ts";
import { assertMatchesOpenApi, documentedStatuses } from "../support/openapi.ts";
import { spawnServer } from "../support/server.ts";
import { freshDatabase } from "../support/db.ts";
import { testEnv } from "../support/env.ts";
import { startStack } from "../support/stack.ts";
import { checkoutCompleted, delivery } from "./payment-webhook/stripe_events.ts";

/** Every (method, path, status) validated, to hold the coverage to the document. */
const seen = new Set<string>();

async function check(method: string, path: string, status: number, res: Response) {
  const body = await assertMatchesOpenApi(method, path, status, res);
  seen.add(`${method} ${path} ${status}`);
  // deno-lint-ignore no-explicit-any
  return body as any;
}

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const ORDER = { symbol: "AAPL", side: "buy", type: "market", qty: 1, time_in_force: "day" };
const key = () => `oa-${crypto.randomUUID()}`;

Deno.test("every route's answers, success and errors, match docs/openapi.json", async (t) => {
  const stack = await startStack({
    env: {
      ORDER_RATE_LIMIT: "6",
      TOOLS_RATE_LIMIT: "30",
      BROKER_TIMEOUT_MS: "300",
    },
  });
  const { server, sims, frontend } = stack;
  const call = server.call;
  const origin = { origin: frontend };
  try {
    const user = await stack.userToken();
    const service = await stack.serviceToken();

    await t.step("payment-webhook", async () => {
      const secret = stack.env.STRIPE_WEBHOOK_SECRET;
      const event = checkoutCompleted({ userId: crypto.randomUUID() });
      await check(
        "POST",
        "/payment-webhook",
        200,
        await call("payment-webhook", await delivery(event, secret)),
      );
      const dup = await check(
        "POST",
        "/payment-webhook",
        200,
        await call("payment-webhook", await delivery(event, secret)),
      );
      assertEquals(dup.duplicate, true);
      const bad = await check(
        "POST",
        "/payment-webhook",
        400,
        await call("payment-webhook", await delivery(event, "whsec_not_the_secret")),
      );
      assertEquals(bad.error.code, "INVALID_SIGNATURE");
      await check(
        "POST",
        "/payment-webhook",
        413,
        // A signature header of the right form and time passes the checks made before the body;
        // the body is then refused by its size.
        await call(
          "payment-webhook",
          json("x".repeat(600 * 1024), {
            "stripe-signature": `t=${Math.floor(Date.now() / 1000)},v1=${"0".repeat(64)}`,
          }),
        ),
      );
    });

    await t.step("broker-order POST", async () => {
      const k = key();
      const placed = await check(
        "POST",
        "/broker-order",
        201,
        await call(
          "broker-order",
          json(ORDER, { ...bearer(user), ...origin, "idempotency-key": k }),
        ),
      );
      const replay = await call(
        "broker-order",
        json(ORDER, { ...bearer(user), ...origin, "idempotency-key": k }),
      );
      assertEquals(replay.headers.get("idempotent-replayed"), "true");
      assertEquals((await check("POST", "/broker-order", 201, replay)).id, placed.id);
      const reused = await check(
        "POST",
        "/broker-order",
        422,
        await call(
          "broker-order",
          json({ ...ORDER, qty: 2 }, { ...bearer(user), "idempotency-key": k }),
        ),
      );
      assertEquals(reused.error.code, "IDEMPOTENCY_KEY_REUSED");

      const other = await stack.userToken();
      const h = (extra: Record<string, string> = {}) => ({
        ...bearer(other),
        "idempotency-key": key(),
        ...extra,
      });
      assertEquals(
        (await check(
          "POST",
          "/broker-order",
          400,
          await call("broker-order", json(ORDER, bearer(other))),
        ))
          .error.code,
        "IDEMPOTENCY_KEY_REQUIRED",
      );
      const invalid = await check(
        "POST",
        "/broker-order",
        400,
        await call("broker-order", json({ ...ORDER, qty: -1, extra: 1 }, h())),
      );
      assertEquals(invalid.error.code, "VALIDATION_FAILED");
      assert(invalid.error.issues.length > 0);
      assertEquals(
        (await check("POST", "/broker-order", 400, await call("broker-order", json("{", h()))))
          .error.code,
        "MALFORMED_JSON",
      );
      await check(
        "POST",
        "/broker-order",
        415,
        await call("broker-order", {
          method: "POST",
          headers: h({ "content-type": "text/plain" }),
          body: "x",
        }),
      );
      sims.broker.reject("ZZZZ");
      const rejected = await check(
        "POST",
        "/broker-order",
        422,
        await call("broker-order", json({ ...ORDER, symbol: "ZZZZ" }, h())),
      );
      assertEquals(rejected.error.code, "ORDER_REJECTED");
      // The limit (6 a window) counts every call of this user, refusals included: spend it.
      let limited: Response | undefined;
      for (let i = 0; i < 6; i++) {
        limited = await call("broker-order", json(ORDER, h()));
        if (limited.status === 429) break;
        await check("POST", "/broker-order", 201, limited);
      }
      const tooMany = await check("POST", "/broker-order", 429, limited!);
      assertEquals(tooMany.error.code, "RATE_LIMITED");

      // Outcome unknown: the broker answers after the timeout, and so does the lookup.
      const third = await stack.userToken();
      sims.broker.delayMs = 1_000;
      sims.broker.lookupDelayMs = 1_000;
      try {
        const pending = await check(
          "POST",
          "/broker-order",
          202,
          await call("broker-order", json(ORDER, { ...bearer(third), "idempotency-key": key() })),
        );
        assertEquals(pending.status, "pending_confirmation");
      } finally {
        sims.broker.delayMs = 0;
        sims.broker.lookupDelayMs = 0;
      }

      await check("POST", "/broker-order", 401, await call("broker-order", json(ORDER)));
      await check(
        "POST",
        "/broker-order",
        403,
        await call("broker-order", json(ORDER, { ...bearer(service), "idempotency-key": key() })),
      );
      await check(
        "POST",
        "/broker-order",
        403,
        await call(
          "broker-order",
          json(ORDER, {
            ...bearer(user),
            origin: "https://evil.example",
            "idempotency-key": key(),
          }),
        ),
      );
    });

    await t.step("broker-order GET", async () => {
      const page = await check(
        "GET",
        "/broker-order",
        200,
        await call("broker-order", { headers: bearer(user) }),
      );
      assert(page.orders.length > 0);
      await check(
        "GET",
        "/broker-order",
        400,
        await call("broker-order?limit=x", { headers: bearer(user) }),
      );
      await check("GET", "/broker-order", 401, await call("broker-order"));
    });

    await t.step("broker-order one order, cancel and sync", async () => {
      // A user of its own: the first user's order quota is spent by the step above.
      const trader = await stack.userToken(crypto.randomUUID());
      const place = async (body: Record<string, unknown>) =>
        await (await call(
          "broker-order",
          json(body, { ...bearer(trader), "idempotency-key": key() }),
        ))
          .json();
      // A limit order far below the price stays open; a market order fills at the broker.
      const open = await place({ ...ORDER, type: "limit", limit_price: 1, time_in_force: "gtc" });
      const filled = await place(ORDER);
      const one = await check(
        "GET",
        "/broker-order/{id}",
        200,
        await call(`broker-order/${open.id}`, { headers: bearer(trader) }),
      );
      assertEquals(one.id, open.id);
      await check(
        "GET",
        "/broker-order/{id}",
        404,
        await call(`broker-order/${crypto.randomUUID()}`, { headers: bearer(trader) }),
      );
      await check("GET", "/broker-order/{id}", 401, await call(`broker-order/${open.id}`));
      const canceled = await check(
        "DELETE",
        "/broker-order/{id}",
        200,
        await call(`broker-order/${open.id}`, { method: "DELETE", headers: bearer(trader) }),
      );
      assert(["pending_cancel", "canceled"].includes(canceled.status), canceled.status);
      await check(
        "DELETE",
        "/broker-order/{id}",
        404,
        await call(`broker-order/${crypto.randomUUID()}`, {
          method: "DELETE",
          headers: bearer(trader),
        }),
      );
      sims.broker.fillNow(filled.brokerOrderId);
      const report = await check(
        "POST",
        "/broker-order/sync",
        200,
        await call("broker-order/sync", { method: "POST", headers: bearer(service) }),
      );
      assert(report.changed >= 1, JSON.stringify(report));
      await check(
        "POST",
        "/broker-order/sync",
        403,
        await call("broker-order/sync", { method: "POST", headers: bearer(trader) }),
      );
      const closed = await check(
        "DELETE",
        "/broker-order/{id}",
        409,
        await call(`broker-order/${filled.id}`, { method: "DELETE", headers: bearer(trader) }),
      );
      assertEquals(closed.error.code, "ORDER_NOT_CANCELABLE");
    });

    await t.step("payment-webhook catch-up", async () => {
      const run = await check(
        "POST",
        "/payment-webhook/catch-up",
        200,
        await call("payment-webhook/catch-up", { method: "POST", headers: bearer(service) }),
      );
      assertEquals(typeof run.applied, "number");
      await check(
        "POST",
        "/payment-webhook/catch-up",
        401,
        await call("payment-webhook/catch-up", { method: "POST" }),
      );
    });

    await t.step("auth", async () => {
      const creds = { email: SANDBOX_USER.email, password: SANDBOX_USER.password };
      const session = await check(
        "POST",
        "/auth/login",
        200,
        await call("auth/login", json(creds, origin)),
      );
      await check(
        "POST",
        "/auth/login",
        401,
        await call("auth/login", json({ ...creds, password: "wrong-password" }, origin)),
      );
      await check(
        "POST",
        "/auth/login",
        400,
        await call("auth/login", json({ email: "x" }, origin)),
      );
      await check(
        "POST",
        "/auth/login",
        415,
        await call("auth/login", {
          method: "POST",
          headers: { "content-type": "text/plain" },
          body: "x",
        }),
      );
      const victim = { email: `nobody-${crypto.randomUUID()}@example.com`, password: "x" };
      let last: Response | undefined;
      for (let i = 0; i < 6; i++) {
        last = await call("auth/login", json(victim, origin));
        if (last.status === 429) break;
        await check("POST", "/auth/login", 401, last);
      }
      await check("POST", "/auth/login", 429, last!);

      const refreshed = await check(
        "POST",
        "/auth/refresh",
        200,
        await call("auth/refresh", json({ refresh_token: session.refresh_token }, origin)),
      );
      await check(
        "POST",
        "/auth/refresh",
        401,
        await call("auth/refresh", json({ refresh_token: "not-a-refresh-token" }, origin)),
      );
      await check("POST", "/auth/refresh", 400, await call("auth/refresh", json({}, origin)));
      await check(
        "POST",
        "/auth/logout",
        200,
        await call("auth/logout", {
          method: "POST",
          headers: { ...bearer(refreshed.access_token), ...origin },
        }),
      );
      await check("POST", "/auth/logout", 401, await call("auth/logout", { method: "POST" }));

      const start = await check(
        "GET",
        "/auth/oauth/start",
        200,
        await call("auth/oauth/start", { headers: { ...bearer(user), ...origin } }),
      );
      await check("GET", "/auth/oauth/start", 401, await call("auth/oauth/start"));
      const back = await fetch(start.url, { redirect: "manual" });
      await back.body?.cancel();
      const page = new URL(back.headers.get("location")!);
      const grant = {
        code: page.searchParams.get("code")!,
        state: page.searchParams.get("state")!,
      };
      const someoneElse = await stack.userToken();
      const forbidden = await check(
        "POST",
        "/auth/oauth/callback",
        403,
        await call("auth/oauth/callback", json(grant, { ...bearer(someoneElse), ...origin })),
      );
      assertEquals(forbidden.error.code, "OAUTH_STATE_FORBIDDEN");
      await check(
        "POST",
        "/auth/oauth/callback",
        200,
        await call("auth/oauth/callback", json(grant, { ...bearer(user), ...origin })),
      );
      const replayed = await check(
        "POST",
        "/auth/oauth/callback",
        400,
        await call("auth/oauth/callback", json(grant, { ...bearer(user), ...origin })),
      );
      assertEquals(replayed.error.code, "OAUTH_STATE_INVALID");
      await check(
        "POST",
        "/auth/oauth/callback",
        401,
        await call("auth/oauth/callback", json(grant)),
      );
    });

    await t.step("market-data", async () => {
      const quotes = await check(
        "GET",
        "/market-data",
        200,
        await call("market-data?symbols=AAPL,MSFT", { headers: bearer(user) }),
      );
      assert(quotes.quotes.AAPL);
      await check(
        "GET",
        "/market-data",
        400,
        await call("market-data?symbols=aapl", { headers: bearer(user) }),
      );
      await check("GET", "/market-data", 400, await call("market-data", { headers: bearer(user) }));
      await check("GET", "/market-data", 401, await call("market-data?symbols=AAPL"));
      await check(
        "GET",
        "/market-data",
        403,
        await call("market-data?symbols=AAPL", {
          headers: { ...bearer(user), origin: "https://evil.example" },
        }),
      );
      sims.quotes.down = true;
      try {
        // A symbol never cached: nothing young enough to serve.
        await check(
          "GET",
          "/market-data",
          503,
          await call("market-data?symbols=NVDA", { headers: bearer(user) }),
        );
      } finally {
        sims.quotes.down = false;
      }
    });

    await t.step("discord-alert", async () => {
      const alert = { severity: "info", title: "OpenAPI", message: "check" };
      await check(
        "POST",
        "/discord-alert",
        202,
        await call("discord-alert", json(alert, bearer(service))),
      );
      await check(
        "POST",
        "/discord-alert",
        202,
        await call("discord-alert", json({ ...alert, dedupKey: "k" }, { apikey: service })),
      );
      await check(
        "POST",
        "/discord-alert",
        400,
        await call("discord-alert", json({ severity: "x" }, bearer(service))),
      );
      await check("POST", "/discord-alert", 401, await call("discord-alert", json(alert)));
      await check(
        "POST",
        "/discord-alert",
        403,
        await call("discord-alert", json(alert, bearer(user))),
      );
      await check(
        "POST",
        "/discord-alert",
        415,
        await call("discord-alert", {
          method: "POST",
          headers: { ...bearer(service), "content-type": "text/plain" },
          body: "x",
        }),
      );
      await check(
        "POST",
        "/discord-alert/drain",
        200,
        await call("discord-alert/drain", { method: "POST", headers: bearer(service) }),
      );
      await check(
        "POST",
        "/discord-alert/drain",
        401,
        await call("discord-alert/drain", { method: "POST" }),
      );
      await check(
        "POST",
        "/discord-alert/drain",
        403,
        await call("discord-alert/drain", { method: "POST", headers: bearer(user) }),
      );
    });

    await t.step("tools", async () => {
      const list = await check(
        "GET",
        "/tools",
        200,
        await call("tools", { headers: bearer(user) }),
      );
      assertEquals(list.tools.map((t: { name: string }) => t.name).sort(), [
        "backtest.run",
        "options.greeks",
      ]);
      await check("GET", "/tools", 401, await call("tools"));
      const greeks = {
        tool: "options.greeks",
        params: {
          type: "call",
          spot: 100,
          strike: 100,
          volatility: 0.2,
          rate: 0.01,
          timeToExpiryYears: 1,
        },
      };
      await check(
        "POST",
        "/tools/execute",
        200,
        await call("tools/execute", json(greeks, bearer(user))),
      );
      const backtest = {
        tool: "backtest.run",
        params: {
          symbol: "AAPL",
          timeframe: "1Day",
          start: "2024-01-01T00:00:00Z",
          end: "2024-03-01T00:00:00Z",
          strategy: { kind: "sma_cross", fast: 2, slow: 5 },
          initialCash: 10_000,
        },
      };
      await check(
        "POST",
        "/tools/execute",
        200,
        await call("tools/execute", json(backtest, bearer(user))),
      );
      await check(
        "POST",
        "/tools/execute",
        404,
        await call("tools/execute", json({ tool: "rm -rf", params: {} }, bearer(user))),
      );
      const invalid = await check(
        "POST",
        "/tools/execute",
        400,
        await call(
          "tools/execute",
          json({ ...greeks, params: { ...greeks.params, spot: -1 } }, bearer(user)),
        ),
      );
      assertEquals(invalid.error.code, "VALIDATION_FAILED");
      const expired = await check(
        "POST",
        "/tools/execute",
        400,
        await call(
          "tools/execute",
          json({
            tool: "options.greeks",
            params: {
              ...greeks.params,
              timeToExpiryYears: undefined,
              expiresAt: "2020-01-01T00:00:00Z",
            },
          }, bearer(user)),
        ),
      );
      assertEquals(expired.error.code, "OPTION_EXPIRED");
      await check(
        "POST",
        "/tools/execute",
        415,
        await call("tools/execute", {
          method: "POST",
          headers: { ...bearer(user), "content-type": "text/plain" },
          body: "x",
        }),
      );
    });

    await t.step("status", async () => {
      const open = await check("GET", "/status", 200, await call("status"));
      assertEquals(open, { status: "ok" });
      const details = await check(
        "GET",
        "/status",
        200,
        await call("status", { headers: bearer(service) }),
      );
      assert(details.dependencies);
    });
  } finally {
    await stack.close();
  }
});

Deno.test("status on a database without the migrations answers the documented 503", async () => {
  const db = await freshDatabase();
  const server = await spawnServer(testEnv(db.url), {
    entry: "functions/status/index.ts",
    ready: /"msg":"listening","url":"(http:\/\/[\d.:]+)\/status"/,
  });
  try {
    const res = await fetch(`${server.url.replace("0.0.0.0", "127.0.0.1")}/status`);
    const body = await check("GET", "/status", 503, res);
    assertEquals(body.status, "fail_safe");
    assertEquals(body.error.code, "SCHEMA_OUTDATED");
  } finally {
    await server.stop("SIGTERM");
    await db.close();
  }
});

Deno.test("every documented operation was driven, and with its success status", () => {
  const doc = JSON.parse(
    Deno.readTextFileSync(new URL("../../docs/openapi.json", import.meta.url)),
  );
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(ops)) {
      const driven = [...seen].filter((s) => s.startsWith(`${method.toUpperCase()} ${path} `));
      assert(driven.length > 0, `${method.toUpperCase()} ${path} was not driven`);
      const success = documentedStatuses(method, path).filter((s) => s < 300);
      assert(
        success.some((s) => seen.has(`${method.toUpperCase()} ${path} ${s}`)),
        `${method.toUpperCase()} ${path}: no success answer validated`,
      );
    }
  }
});
