/**
 * market-data through the real local server, a real Postgres and the simulated Alpaca Market
 * Data API on loopback: coalescing, the shared TTL cache, stale fallback, the provider's 429
 * pause, and input validation.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { SANDBOX_SECRETS } from "../../../local/sandbox/index.ts";
import {
  type MarketDataSimulator,
  startMarketDataSimulator,
} from "../../../local/sandbox/market_data.ts";
import { freshDatabase, onServer } from "../../support/db.ts";
import { testEnv, userToken } from "../../support/env.ts";
import { spawnServer, startTestServer, type TestServer } from "../../support/server.ts";

const KEYS = {
  keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
  secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
};

function envFor(dbUrl: string, sim: MarketDataSimulator, extra: Record<string, string> = {}) {
  return testEnv(dbUrl, {
    MARKET_DATA_API_URL: sim.url,
    MARKET_DATA_API_KEY_ID: KEYS.keyId,
    MARKET_DATA_API_SECRET_KEY: KEYS.secretKey,
    ...extra,
  });
}

/** Runs `fn` with a simulator, a fresh database and the server (market-data only). */
async function withServer(
  extra: Record<string, string>,
  fn: (server: TestServer, sim: MarketDataSimulator, get: Getter) => Promise<void>,
  simOpts: { unknownSymbols?: string[] } = {},
) {
  const sim = await startMarketDataSimulator({ ...KEYS, ...simOpts });
  const db = await freshDatabase({ migrated: true });
  let server: TestServer | undefined;
  try {
    server = await startTestServer(envFor(db.url, sim, extra), {
      only: ["market-data"],
    });
    const token = await userToken();
    const s = server;
    const get: Getter = async (symbols) => {
      const res = await s.call(`market-data?symbols=${symbols}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      return { res, body: await res.json() };
    };
    await fn(server, sim, get);
  } finally {
    await server?.close();
    await db.close();
    await sim.close();
  }
}

// deno-lint-ignore no-explicit-any
type Getter = (symbols: string) => Promise<{ res: Response; body: Record<string, any> }>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("market-data: 50 concurrent requests for the same symbols make one upstream call, and one more after the TTL", async () => {
  // The embedded database serves one connection: 50 requests queue for it longer than the fast
  // test deadline (which counts the wait for a connection), so the queue gets the default.
  const extra = { MARKET_DATA_CACHE_TTL_SECONDS: "1", DB_QUERY_TIMEOUT_MS: "1500" };
  await withServer(extra, async (_server, sim, get) => {
    const answers = await Promise.all(Array.from({ length: 50 }, () => get("AAPL,MSFT,AAPL")));
    for (const { res, body } of answers) {
      assertEquals(res.status, 200, JSON.stringify(body));
      assertEquals(Object.keys(body.quotes).sort(), ["AAPL", "MSFT"]);
      assertEquals(body.quotes.AAPL.bid, sim.priceOf("AAPL"));
      assertEquals(res.headers.get("cache-control"), "private, no-store");
    }
    assertEquals(sim.calls, 1);
    assertEquals(sim.symbolsPerCall[0].sort(), ["AAPL", "MSFT"]);
    assert(answers.some(({ body }) => body.quotes.AAPL.source === "live"));

    const cached = await get("AAPL");
    assertEquals(cached.body.quotes.AAPL.source, "cache");
    assertEquals(sim.calls, 1);

    await sleep(1100);
    const again = await get("AAPL,MSFT");
    assertEquals(again.body.quotes.AAPL.source, "live");
    assertEquals(again.body.quotes.AAPL.ageSeconds, 0);
    assertEquals(sim.calls, 2);
  });
});

Deno.test("market-data: a symbol the provider has no quote for is listed as notFound, never priced", async () => {
  await withServer({}, async (_server, sim, get) => {
    const { res, body } = await get("AAPL,ZZZZ");
    assertEquals(res.status, 200);
    assertEquals(Object.keys(body.quotes), ["AAPL"]);
    assertEquals(body.notFound, ["ZZZZ"]);
    const again = await get("ZZZZ");
    assertEquals(again.body.notFound, ["ZZZZ"]);
    assertEquals(sim.calls, 1); // the negative answer is cached too
  }, { unknownSymbols: ["ZZZZ"] });
});

Deno.test("market-data: provider down serves cached quotes marked stale, then 503 past the stale limit", async () => {
  await withServer(
    { MARKET_DATA_CACHE_TTL_SECONDS: "1", MARKET_DATA_MAX_STALE_SECONDS: "2" },
    async (_server, sim, get) => {
      assertEquals((await get("AAPL")).res.status, 200);
      sim.down = true;
      await sleep(1100);
      const stale = await get("AAPL");
      assertEquals(stale.res.status, 200);
      assertEquals(stale.body.quotes.AAPL.stale, true);
      assertEquals(stale.body.quotes.AAPL.source, "cache");
      assert(stale.body.quotes.AAPL.ageSeconds >= 1);
      assertEquals(stale.body.quotes.AAPL.bid, sim.priceOf("AAPL"));

      const never = await get("MSFT"); // nothing cached: no quote to fall back on
      assertEquals(never.res.status, 503);
      assertEquals(never.body.error.code, "UPSTREAM_UNAVAILABLE");
      assertMatch(never.res.headers.get("retry-after") ?? "", /^\d+$/);

      await sleep(1000);
      const old = await get("AAPL");
      assertEquals(old.res.status, 503);
      assertEquals(old.body.error.code, "UPSTREAM_UNAVAILABLE");
      assertMatch(old.res.headers.get("retry-after") ?? "", /^\d+$/);
      assertEquals(old.res.headers.get("cache-control"), "private, no-store");
    },
  );
});

Deno.test("market-data: a provider 429 pauses upstream calls until its Retry-After", async () => {
  await withServer({ MARKET_DATA_CACHE_TTL_SECONDS: "1" }, async (server, sim, get) => {
    assertEquals((await get("MSFT")).res.status, 200);
    assertEquals(sim.calls, 1);
    await sleep(1100);
    sim.rateLimitNext(2);
    const first = await get("MSFT");
    assertEquals(first.res.status, 200);
    assertEquals(first.body.quotes.MSFT.stale, true);
    assertEquals(sim.calls, 2);

    const paused = await get("MSFT");
    assertEquals(paused.body.quotes.MSFT.stale, true);
    const uncached = await get("NVDA");
    assertEquals(uncached.res.status, 503);
    assertEquals(uncached.body.error.code, "UPSTREAM_UNAVAILABLE");
    assert(Number(uncached.res.headers.get("retry-after")) >= 1);
    assertEquals(sim.calls, 2); // no call during the pause
    const [pause] = await server.platform.db.query((sql) =>
      sql`select 1 from internal.provider_pauses where paused_until > now()`
    );
    assert(pause, "the pause is shared through Postgres");

    await sleep(2100);
    const after = await get("MSFT");
    assertEquals(after.body.quotes.MSFT.source, "live");
    assertEquals(sim.calls, 3);
  });
});

Deno.test("market-data: invalid, missing and too many symbols get 400 and no upstream call", async () => {
  await withServer({}, async (server, sim, get) => {
    const tooMany = Array.from(
      { length: 51 },
      (_, i) =>
        `S${String.fromCharCode(65 + (i % 26))}${String.fromCharCode(65 + Math.floor(i / 26))}`,
    ).join(",");
    for (const q of ["aapl", "AAPL,,MSFT", "1ABC", "ABCDEFGHIJK", "AAPL;DROP", "", tooMany]) {
      const { res, body } = await get(encodeURIComponent(q));
      assertEquals(res.status, 400, q);
      assertMatch(body.error.code, /^(INVALID_SYMBOLS|TOO_MANY_SYMBOLS)$/);
    }
    assertEquals((await get(encodeURIComponent(tooMany))).body.error.code, "TOO_MANY_SYMBOLS");
    const fifty = tooMany.split(",").slice(0, 50).join(",");
    assertEquals((await get(fifty)).res.status, 200);
    assertEquals(sim.calls, 1);
    const anonymous = await server.call("market-data?symbols=AAPL");
    assertEquals(anonymous.status, 401);
    await anonymous.body?.cancel();
  });
});

Deno.test(
  "market-data: concurrent requests on two server processes make one upstream call",
  onServer,
  async () => {
    const sim = await startMarketDataSimulator(KEYS);
    sim.delayMs = 300;
    const db = await freshDatabase({ migrated: true });
    const env = envFor(db.url, sim);
    const a = await spawnServer(env);
    const b = await spawnServer(env).catch(async (err) => {
      await a.stop();
      throw err;
    });
    try {
      const token = await userToken();
      const call = (s: typeof a) =>
        s.call("market-data?symbols=AAPL,TSLA", { headers: { authorization: `Bearer ${token}` } })
          .then(async (res) => ({ status: res.status, body: await res.json() }));
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) => call(i % 2 ? a : b)),
      );
      for (const { status, body } of answers) {
        assertEquals(status, 200);
        assertEquals(body.quotes.TSLA.bid, sim.priceOf("TSLA"));
      }
      assertEquals(sim.calls, 1);
    } finally {
      await a.stop();
      await b.stop();
      await db.close();
      await sim.close();
    }
  },
);
