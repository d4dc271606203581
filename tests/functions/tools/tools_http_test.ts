/**
 * tools through the real local server, a real Postgres and the simulated market-data provider:
 * the listing, the allowlist (`__proto__`, `constructor`, `../x`), strict parameters, the user
 * JWT, the per-user rate limit with its RateLimit fields, and a backtest's provider failure.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SANDBOX_SECRETS } from "../../../local/sandbox/index.ts";
import {
  type MarketDataSimulator,
  startMarketDataSimulator,
} from "../../../local/sandbox/market_data.ts";
import { freshDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv, userToken } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";

const KEYS = {
  keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
  secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
};

// deno-lint-ignore no-explicit-any
type Body = Record<string, any>;
interface Client {
  server: TestServer;
  sim: MarketDataSimulator;
  token: string;
  list(token?: string): Promise<{ res: Response; body: Body }>;
  execute(body: unknown, init?: RequestInit): Promise<{ res: Response; body: Body }>;
}

async function withServer(extra: Record<string, string>, fn: (c: Client) => Promise<void>) {
  const sim = await startMarketDataSimulator(KEYS);
  const db = await freshDatabase({ migrated: true });
  let server: TestServer | undefined;
  try {
    server = await startTestServer(
      testEnv(db.url, {
        MARKET_DATA_API_URL: sim.url,
        MARKET_DATA_API_KEY_ID: KEYS.keyId,
        MARKET_DATA_API_SECRET_KEY: KEYS.secretKey,
        ...extra,
      }),
      { only: ["tools"] },
    );
    const token = await userToken();
    const s = server;
    const read = async (res: Response) => ({ res, body: await res.json() as Body });
    await fn({
      server: s,
      sim,
      token,
      list: async (t = token) =>
        read(await s.call("tools", { headers: t ? { authorization: `Bearer ${t}` } : {} })),
      execute: async (body, init = {}) =>
        read(
          await s.call("tools/execute", {
            method: "POST",
            body: typeof body === "string" ? body : JSON.stringify(body),
            ...init,
            headers: {
              authorization: `Bearer ${token}`,
              "content-type": "application/json",
              ...init.headers as Record<string, string>,
            },
          }),
        ),
    });
  } finally {
    await server?.close();
    await db.close();
    await sim.close();
  }
}

const HULL = {
  type: "call",
  spot: 49,
  strike: 50,
  volatility: 0.2,
  rate: 0.05,
  timeToExpiryYears: 0.3846,
};
const BACKTEST = {
  symbol: "AAPL",
  timeframe: "1Hour",
  start: "2026-01-05T00:00:00Z",
  end: "2026-03-05T00:00:00Z",
  strategy: { kind: "sma_cross", fast: 5, slow: 20 },
  initialCash: 10_000,
};

Deno.test("tools: GET lists each tool with the JSON Schema of its parameters, with RateLimit fields", async () => {
  await withServer({}, async ({ list }) => {
    const { res, body } = await list();
    assertEquals(res.status, 200);
    assertEquals(body.tools.map((t: Body) => t.name), ["options.greeks", "backtest.run"]);
    const greeks = body.tools[0];
    assert(greeks.summary.length > 10);
    assertEquals(greeks.parameters.type, "object");
    assertEquals(greeks.parameters.additionalProperties, false);
    assertEquals(greeks.parameters.properties.volatility.minimum, 0.0001);
    assertEquals(body.tools[1].parameters.properties.symbol.pattern, "^[A-Z][A-Z.]{0,9}$");
    assertMatch(res.headers.get("ratelimit-policy")!, /^"tools";q=60;w=60$/);
    assertMatch(res.headers.get("ratelimit")!, /^"tools";r=59;t=\d+$/);
    assertEquals(res.headers.get("cache-control"), "private, no-store");
  });
});

Deno.test("tools: without a user token both routes answer 401 and nothing runs", async () => {
  await withServer({}, async ({ server, list, sim }) => {
    const listed = await list("");
    assertEquals(listed.res.status, 401);
    const res = await server.call("tools/execute", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tool: "backtest.run", params: BACKTEST }),
    });
    assertEquals(res.status, 401);
    await res.body?.cancel();
    assertEquals(sim.barCalls, 0);
  });
});

Deno.test("tools: strict CORS for the frontend's origin only, and a body past the limit is 413", async () => {
  await withServer({ BODY_LIMIT_BYTES: "1024" }, async ({ server, execute }) => {
    const preflight = (origin: string) =>
      server.call("tools/execute", {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      });
    const good = await preflight(FRONTEND);
    await good.body?.cancel();
    assertEquals(good.headers.get("access-control-allow-origin"), FRONTEND);
    const evil = await preflight("https://evil.example");
    await evil.body?.cancel();
    assertEquals(evil.headers.get("access-control-allow-origin"), null);
    const big = await execute({
      tool: "options.greeks",
      params: { ...HULL, pad: "x".repeat(2_000) },
    });
    assertEquals([big.res.status, big.body.error.code], [413, "PAYLOAD_TOO_LARGE"]);
  });
});

Deno.test("tools: Hull's example through the API", async () => {
  await withServer({}, async ({ execute }) => {
    const { res, body } = await execute({ tool: "options.greeks", params: HULL });
    assertEquals(res.status, 200);
    assertEquals(Object.keys(body).sort(), [
      "delta",
      "gamma",
      "price",
      "rho",
      "theta",
      "timeToExpiryYears",
      "vega",
    ]);
    assert(Math.abs(body.price - 2.40) < 0.005 && Math.abs(body.delta - 0.522) < 0.0005);
    assertMatch(res.headers.get("ratelimit")!, /^"tools";r=\d+;t=\d+$/);
  });
});

Deno.test("tools: names that are not tools are 404 TOOL_NOT_FOUND, prototype keys and paths included", async () => {
  await withServer({}, async ({ execute, sim }) => {
    for (
      const tool of [
        "__proto__",
        "constructor",
        "toString",
        "hasOwnProperty",
        "../x",
        "",
        " options.greeks",
        "options.greeks/../x",
      ]
    ) {
      const { res, body } = await execute({ tool, params: HULL });
      if (tool === "") {
        assertEquals(res.status, 400, "an empty name is not even a name");
        continue;
      }
      assertEquals(res.status, 404, tool);
      assertEquals(body.error.code, "TOOL_NOT_FOUND", tool);
    }
    assertEquals(sim.barCalls, 0);
  });
});

Deno.test("tools: bad parameters are 400 VALIDATION_FAILED with issues, and nothing is executed", async () => {
  await withServer({}, async ({ execute, sim }) => {
    const cases: [string, unknown, string][] = [
      ["options.greeks", { ...HULL, extra: 1 }, "(root)"],
      ["options.greeks", { ...HULL, spot: "49" }, "spot"],
      ["options.greeks", { ...HULL, spot: 1e308 }, "spot"],
      ["options.greeks", { ...HULL, volatility: -0.2 }, "volatility"],
      ["options.greeks", { ...HULL, rate: 1e308 }, "rate"],
      ["options.greeks", { ...HULL, timeToExpiryYears: -1 }, "timeToExpiryYears"],
      ["options.greeks", { ...HULL, expiresAt: "2030-01-01T00:00:00Z" }, "expiresAt"],
      ["options.greeks", { ...HULL, type: "straddle" }, "type"],
      ["backtest.run", { ...BACKTEST, symbol: "../../etc" }, "symbol"],
      ["backtest.run", { ...BACKTEST, symbol: "AAPL?x=1" }, "symbol"],
      ["backtest.run", { ...BACKTEST, timeframe: "1Sec" }, "timeframe"],
      ["backtest.run", { ...BACKTEST, start: "yesterday" }, "start"],
      ["backtest.run", { ...BACKTEST, end: BACKTEST.start }, "end"],
      [
        "backtest.run",
        { ...BACKTEST, strategy: { kind: "sma_cross", fast: 20, slow: 5 } },
        "strategy.fast",
      ],
      [
        "backtest.run",
        { ...BACKTEST, strategy: { kind: "sma_cross", fast: 5, slow: 1e9 } },
        "strategy.slow",
      ],
      ["backtest.run", { ...BACKTEST, strategy: { kind: "eval", code: "1" } }, "strategy.kind"],
      ["backtest.run", { ...BACKTEST, strategy: { kind: "buy_and_hold", extra: 1 } }, "strategy"],
      ["backtest.run", { ...BACKTEST, initialCash: "10000" }, "initialCash"],
    ];
    for (const [tool, params, path] of cases) {
      const { res, body: answer } = await execute({ tool, params });
      assertEquals(res.status, 400, `${tool} ${JSON.stringify(params)}`);
      assertEquals(answer.error.code, "VALIDATION_FAILED", JSON.stringify(answer));
      assert(
        answer.error.issues.some((i: Body) => i.path === path || i.path.startsWith(path)),
        `${path}: ${JSON.stringify(answer.error.issues)}`,
      );
    }
    // Sent as text so `__proto__` arrives as an own key, as an attacker would send it.
    const pollution = await execute(
      `{"tool":"options.greeks","params":{"__proto__":{"x":1},${JSON.stringify(HULL).slice(1)}}`,
    );
    assertEquals(pollution.res.status, 400);
    assertEquals(({} as Body).x, undefined);
    const extraTop = await execute({ tool: "options.greeks", params: HULL, run: "rm -rf /" });
    assertEquals(extraTop.res.status, 400);
    const notJson = await execute("{tool: options.greeks}");
    assertEquals([notJson.res.status, notJson.body.error.code], [400, "MALFORMED_JSON"]);
    const wrongType = await execute({ tool: "options.greeks", params: HULL }, {
      headers: { "content-type": "text/plain" },
    });
    assertEquals(wrongType.res.status, 415);
    assertEquals(sim.barCalls, 0);
  });
});

Deno.test("tools: past the per-user quota 429 with Retry-After; another user is not affected", async () => {
  await withServer({ TOOLS_RATE_LIMIT: "3" }, async ({ execute, list }) => {
    for (let i = 0; i < 3; i++) {
      assertEquals((await execute({ tool: "options.greeks", params: HULL })).res.status, 200);
    }
    const { res, body } = await execute({ tool: "options.greeks", params: HULL });
    assertEquals(res.status, 429);
    assertEquals(body.error.code, "RATE_LIMITED");
    assert(Number(res.headers.get("retry-after")) >= 1);
    assertMatch(res.headers.get("ratelimit")!, /^"tools";r=0;t=\d+$/);
    const other = await list(await userToken());
    assertEquals(other.res.status, 200);
  });
});

Deno.test("tools: a backtest whose provider fails mid-run answers 503 with Retry-After and no result", async () => {
  await withServer({ TOOLS_BACKTEST_PAGE_SIZE: "100" }, async ({ execute, sim }) => {
    const ok = await execute({ tool: "backtest.run", params: BACKTEST });
    assertEquals(ok.res.status, 200, JSON.stringify(ok.body));
    assertEquals(ok.body.bars, 59 * 24);
    assertEquals(Object.keys(ok.body).sort(), [
      "bars",
      "finalEquity",
      "maxDrawdown",
      "totalReturn",
      "trades",
    ]);
    const pagesBefore = sim.barPages;
    sim.barsFailAfterPages = pagesBefore + 3;
    const { res, body } = await execute({ tool: "backtest.run", params: BACKTEST });
    assertEquals(res.status, 503);
    assertEquals(body.error.code, "UPSTREAM_UNAVAILABLE");
    assert(Number(res.headers.get("retry-after")) >= 1);
    assertEquals(body.bars, undefined);
    assertEquals(sim.barPages, pagesBefore + 3);
  });
});

Deno.test("backtests: at most TOOLS_BACKTEST_CONCURRENCY run at once per user (429 BACKTESTS_BUSY); the slot comes back; other users and other tools are not held", async () => {
  await withServer({ TOOLS_BACKTEST_CONCURRENCY: "2" }, async ({ sim, execute, server }) => {
    sim.delayMs = 600; // each backtest's single page takes a while
    const run = { tool: "backtest.run", params: BACKTEST };
    const first = [execute(run), execute(run)];
    await new Promise((r) => setTimeout(r, 200)); // both hold their slots now
    const busy = await execute(run);
    assertEquals(busy.res.status, 429);
    assertEquals(busy.body.error.code, "BACKTESTS_BUSY");
    assertMatch(busy.res.headers.get("retry-after") ?? "", /^\d+$/);
    const calls = sim.barCalls;
    const other = await server.call("tools/execute", {
      method: "POST",
      headers: {
        authorization: `Bearer ${await userToken()}`,
        "content-type": "application/json",
      },
      body: JSON.stringify(run),
    });
    assertEquals(other.status, 200, "another user has slots of their own");
    await other.body?.cancel();
    const greeks = await execute({ tool: "options.greeks", params: HULL });
    assertEquals(greeks.res.status, 200, "other tools need no slot");
    for (const r of await Promise.all(first)) assertEquals(r.res.status, 200);
    assert(sim.barCalls > calls, "the other user's backtest ran");
    const again = await execute(run);
    assertEquals(again.res.status, 200, "slots are given back when a run ends");
    const [held] = await server.platform.db.query((sql) =>
      sql<{ n: number }[]>`select count(*)::int as n from internal.backtest_slots`
    );
    assertEquals(held.n, 0);
  });
});

Deno.test("backtests have their own per-user rate, below the tools' one", async () => {
  await withServer({ TOOLS_BACKTEST_RATE_LIMIT: "3" }, async ({ execute }) => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push((await execute({ tool: "backtest.run", params: BACKTEST })).res.status);
    }
    assertEquals(statuses, [200, 200, 200, 429]);
    const greeks = await execute({ tool: "options.greeks", params: HULL });
    assertEquals(greeks.res.status, 200, "other tools keep their own quota");
  });
});

Deno.test("a backtest whose range could hold more bars than the cap is refused before any bar is read", async () => {
  await withServer({}, async ({ sim, execute }) => {
    for (
      const [timeframe, years] of [["1Min", 100], ["1Min", 2], ["5Min", 10], [
        "1Hour",
        100,
      ]] as const
    ) {
      const end = new Date(Date.parse(BACKTEST.start) + years * 365 * 86_400_000).toISOString();
      const { res, body } = await execute({
        tool: "backtest.run",
        params: { ...BACKTEST, timeframe, end },
      });
      assertEquals([res.status, body.error.code], [422, "BACKTEST_TOO_LARGE"], timeframe);
    }
    assertEquals(sim.barCalls, 0);
  });
});
