/**
 * A simulated Alpaca Market Data API v2 on loopback, for the tests and the sandbox: latest stock
 * quotes (`GET /v2/stocks/quotes/latest?symbols=A,B`) and historical bars
 * (`GET /v2/stocks/{symbol}/bars`) with deterministic prices per symbol, key headers checked as
 * Alpaca does, and controls for failures, outages, delays and `429`.
 *
 * Alpaca answers `{"quotes": {"AAPL": {"ap", "as", "ax", "bp", "bs", "bx", "c", "t", "z"}}}`
 * and leaves out symbols it has no quote for (https://docs.alpaca.markets/reference/stocklatestquotes).
 * Bars: `{"bars": [{"t", "o", "h", "l", "c", "v", "n", "vw"}], "symbol", "next_page_token"}`,
 * `limit` 1 to 10,000 (default 1,000), oldest first, `next_page_token` null on the last page
 * (https://docs.alpaca.markets/reference/stockbarsingle). Unlike Alpaca the simulator trades
 * around the clock: one bar per timeframe step in `[start, end)`, so a range's bar count is known.
 * Each page is generated when asked, so a million-bar range costs the simulator no memory either.
 *
 * @example
 * ```ts
 * import { startMarketDataSimulator } from "./market_data.ts";
 *
 * const sim = await startMarketDataSimulator({ keyId: "k", secretKey: "s" });
 * await fetch(`${sim.url}/v2/stocks/quotes/latest?symbols=AAPL`, {
 *   headers: { "APCA-API-KEY-ID": "k", "APCA-API-SECRET-KEY": "s" },
 * });
 * sim.calls; // 1
 * await sim.close();
 * ```
 */

export interface MarketDataSimulatorOptions {
  keyId: string;
  secretKey: string;
  /** Symbols the simulated provider has no quote for (left out of answers). */
  unknownSymbols?: string[];
}

export interface MarketDataSimulator {
  url: string;
  /** Quote requests answered (any status) since start. */
  readonly calls: number;
  /** The symbols of each call, in order. */
  readonly symbolsPerCall: string[][];
  /** While true, every call answers `503`. */
  down: boolean;
  /** Delay before answering each call. */
  delayMs: number;
  /** The next `n` calls answer `500`. */
  failNext(n: number): void;
  /** The next call answers `429` with `Retry-After: seconds`. */
  rateLimitNext(retryAfterSeconds: number): void;
  /** The price the simulator quotes for a symbol (bid; ask is one cent higher). */
  priceOf(symbol: string): number;
  /** Bars requests answered (any status) since start. */
  barCalls: number;
  /** Bars pages answered `200`, and the bars in them. */
  barPages: number;
  barsServed: number;
  /** When set, once this many pages were served every further bars call answers `500`. */
  barsFailAfterPages: number | null;
  /** When set, once `pages` pages were served the next bars call answers `429`, once. */
  barsRateLimitAfterPages: { pages: number; retryAfterSeconds: number } | null;
  /** The close of `symbol`'s bar number `index` (0 is the first bar at or after `start`). */
  barClose(symbol: string, index: number): number;
  close(): Promise<void>;
}

/** Deterministic price in [10, 510) from the symbol's characters (the broker simulator's too). */
export function quotePrice(symbol: string): number {
  return price(symbol);
}

function price(symbol: string): number {
  let h = 2166136261;
  for (const ch of symbol) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return Math.round((10 + (h % 50_000) / 100) * 100) / 100;
}

/** Milliseconds of each timeframe the simulator serves. */
export const TIMEFRAME_MS: Record<string, number> = {
  "1Min": 60_000,
  "5Min": 5 * 60_000,
  "15Min": 15 * 60_000,
  "1Hour": 3_600_000,
  "1Day": 86_400_000,
};

/** A deterministic, always positive random-looking walk around the symbol's quote price. */
function barClose(symbol: string, index: number): number {
  const base = price(symbol);
  const phase = (base * 7) % 6.283;
  const swing = 0.2 * Math.sin(index / 1000 + phase) + 0.05 * Math.sin(index / 37) +
    0.01 * Math.sin(index * 1.7);
  return Math.max(0.01, Math.round(base * Math.exp(swing) * 100) / 100);
}

/** Alpaca's time format: RFC 3339 in UTC, whole seconds. */
const barTime = (ms: number) => new Date(ms).toISOString().slice(0, 19) + "Z";

export function startMarketDataSimulator(
  opts: MarketDataSimulatorOptions,
): Promise<MarketDataSimulator> {
  const unknown = new Set(opts.unknownSymbols ?? []);
  let failures = 0;
  let rateLimitSeconds: number | undefined;
  const symbolsPerCall: string[][] = [];
  const controller = new AbortController();
  const state = {
    down: false,
    delayMs: 0,
    calls: 0,
    barCalls: 0,
    barPages: 0,
    barsServed: 0,
    barsFailAfterPages: null as number | null,
    barsRateLimitAfterPages: null as { pages: number; retryAfterSeconds: number } | null,
  };
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: () => {},
  }, async (req) => {
    const url = new URL(req.url);
    const barsPath = /^\/v2\/stocks\/([A-Z][A-Z.]{0,9})\/bars$/.exec(url.pathname);
    if (req.method === "GET" && barsPath) {
      if (
        req.headers.get("apca-api-key-id") !== opts.keyId ||
        req.headers.get("apca-api-secret-key") !== opts.secretKey
      ) {
        return json(401, { message: "unauthorized." });
      }
      return bars(barsPath[1], url.searchParams);
    }
    if (req.method !== "GET" || url.pathname !== "/v2/stocks/quotes/latest") {
      return json(404, { message: "Not Found" });
    }
    if (
      req.headers.get("apca-api-key-id") !== opts.keyId ||
      req.headers.get("apca-api-secret-key") !== opts.secretKey
    ) {
      return json(401, { message: "unauthorized." });
    }
    state.calls++;
    const symbols = (url.searchParams.get("symbols") ?? "").split(",").filter(Boolean);
    symbolsPerCall.push(symbols);
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    if (state.down) return json(503, { message: "service unavailable" });
    if (failures > 0) {
      failures--;
      return json(500, { message: "internal server error" });
    }
    if (rateLimitSeconds !== undefined) {
      const seconds = rateLimitSeconds;
      rateLimitSeconds = undefined;
      return json(429, { message: "too many requests." }, {
        "retry-after": String(seconds),
        "x-ratelimit-limit": "200",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": String(Math.ceil(Date.now() / 1000) + seconds),
      });
    }
    if (symbols.length === 0) return json(400, { message: "invalid symbols" });
    const quotes: Record<string, unknown> = {};
    const t = new Date().toISOString();
    for (const s of symbols) {
      if (unknown.has(s)) continue;
      const bid = price(s);
      quotes[s] = {
        ap: Math.round((bid + 0.01) * 100) / 100,
        as: 3,
        ax: "V",
        bp: bid,
        bs: 2,
        bx: "V",
        c: ["R"],
        t,
        z: "C",
      };
    }
    return json(200, { quotes });
  });

  async function bars(symbol: string, q: URLSearchParams): Promise<Response> {
    state.barCalls++;
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    if (state.down) return json(503, { message: "service unavailable" });
    const limited = state.barsRateLimitAfterPages;
    if (limited && state.barPages >= limited.pages) {
      state.barsRateLimitAfterPages = null;
      return json(429, { message: "too many requests." }, {
        "retry-after": String(limited.retryAfterSeconds),
        "x-ratelimit-limit": "200",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": String(Math.ceil(Date.now() / 1000) + limited.retryAfterSeconds),
      });
    }
    if (state.barsFailAfterPages !== null && state.barPages >= state.barsFailAfterPages) {
      return json(500, { message: "internal server error" });
    }
    const step = TIMEFRAME_MS[q.get("timeframe") ?? ""];
    const start = Date.parse(q.get("start") ?? "");
    const end = Date.parse(q.get("end") ?? "");
    const limit = Number(q.get("limit") ?? "1000");
    if (!step) return json(422, { message: "invalid timeframe" });
    if (Number.isNaN(start) || Number.isNaN(end) || end < start) {
      return json(422, { message: "invalid start or end" });
    }
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      return json(422, { message: "invalid limit" });
    }
    let from = 0;
    const token = q.get("page_token");
    if (token !== null) {
      let decoded: string | undefined;
      try {
        decoded = atob(token);
      } catch {
        decoded = undefined;
      }
      if (decoded === undefined || !/^\d{1,12}$/.test(decoded)) {
        return json(422, { message: "invalid page token" });
      }
      from = Number(decoded);
    }
    const first = Math.ceil(start / step) * step;
    const total = Math.max(0, Math.ceil((end - first) / step));
    const to = Math.min(total, from + limit);
    // Built as text: a 10,000-bar page as objects and JSON.stringify costs several times more.
    const parts: string[] = [];
    for (let i = from; i < to; i++) {
      const c = barClose(symbol, i);
      const o = i === 0 ? c : barClose(symbol, i - 1);
      const h = Math.round((Math.max(o, c) + 0.01) * 100) / 100;
      const l = Math.max(0.01, Math.round((Math.min(o, c) - 0.01) * 100) / 100);
      const vw = Math.round((o + c) / 2 * 100) / 100;
      parts.push(
        `{"t":"${barTime(first + i * step)}","o":${o},"h":${h},"l":${l},"c":${c},` +
          `"v":${100 + (i % 50) * 10},"n":${1 + (i % 7)},"vw":${vw}}`,
      );
    }
    state.barPages++;
    state.barsServed += to - from;
    const next = to < total ? JSON.stringify(btoa(String(to))) : "null";
    return new Response(
      `{"bars":[${parts.join(",")}],"symbol":${JSON.stringify(symbol)},"next_page_token":${next}}`,
      { headers: { "content-type": "application/json" } },
    );
  }

  // The simulator is its own state: tests read `calls` and steer `down`, `delayMs` directly.
  return Promise.resolve(Object.assign(state, {
    url: `http://127.0.0.1:${server.addr.port}`,
    symbolsPerCall,
    failNext(n: number) {
      failures = n;
    },
    rateLimitNext(seconds: number) {
      rateLimitSeconds = seconds;
    },
    priceOf: price,
    barClose,
    async close() {
      controller.abort();
      await server.finished;
    },
  }));
}
