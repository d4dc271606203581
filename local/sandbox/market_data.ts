/**
 * A simulated Alpaca Market Data API v2 on loopback, for the tests and the sandbox: latest stock
 * quotes (`GET /v2/stocks/quotes/latest?symbols=A,B`) with deterministic prices per symbol,
 * key headers checked as Alpaca does, and controls for failures, outages, delays and `429`.
 *
 * Alpaca answers `{"quotes": {"AAPL": {"ap", "as", "ax", "bp", "bs", "bx", "c", "t", "z"}}}`
 * and leaves out symbols it has no quote for (https://docs.alpaca.markets/reference/stocklatestquotes).
 *
 * @example
 * const sim = await startMarketDataSimulator({ keyId: "k", secretKey: "s" });
 * await fetch(`${sim.url}/v2/stocks/quotes/latest?symbols=AAPL`, { headers: {...} });
 * sim.calls; // 1
 * await sim.close();
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
  close(): Promise<void>;
}

/** Deterministic price in [10, 510) from the symbol's characters. */
function price(symbol: string): number {
  let h = 2166136261;
  for (const ch of symbol) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return Math.round((10 + (h % 50_000) / 100) * 100) / 100;
}

export function startMarketDataSimulator(
  opts: MarketDataSimulatorOptions,
): Promise<MarketDataSimulator> {
  const unknown = new Set(opts.unknownSymbols ?? []);
  let failures = 0;
  let rateLimitSeconds: number | undefined;
  const symbolsPerCall: string[][] = [];
  const controller = new AbortController();
  const state = { down: false, delayMs: 0, calls: 0 };
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
    async close() {
      controller.abort();
      await server.finished;
    },
  }));
}
