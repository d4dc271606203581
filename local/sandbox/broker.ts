/**
 * A simulated Alpaca Trading API v2 on loopback, for the sandbox and the tests: the two calls
 * broker-order makes, with Alpaca's documented behaviour (https://docs.alpaca.markets/reference/postorder):
 * - `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` checked on every call, else `401`;
 * - `POST /v2/orders` answers `200` with an order object (uuid `id`, `status: "accepted"`…);
 *   a reused `client_order_id` gets `422 {"code": 40010001, "message": "client_order_id must be unique"}`;
 *   an invalid order `422`; a rejected one (a reject rule) e.g. `403 {"code": 40310000,
 *   "message": "insufficient buying power"}`;
 * - `GET /v2/orders:by_client_order_id?client_order_id=…` answers the order, or `404`.
 *
 * The handle controls it from tests: `placed` (orders accepted), `delayMs` (accept the order at
 * once but answer late: a lost answer), `lookupDelayMs`, `failNext(n, status)`, `reject(symbol)`.
 *
 * @example
 * ```ts
 * import { startBrokerSimulator } from "./broker.ts";
 *
 * const broker = await startBrokerSimulator({ keyId: "k", secretKey: "s" });
 * broker.delayMs = 2_000; // the next order is taken, its answer comes after the caller's deadline
 * await broker.close();
 * ```
 */

/** An order as Alpaca's API returns it (the fields a client reads; the others null). */
export interface SimOrder {
  id: string;
  client_order_id: string;
  created_at: string;
  updated_at: string;
  submitted_at: string;
  filled_at: null;
  expired_at: null;
  canceled_at: null;
  failed_at: null;
  replaced_at: null;
  replaced_by: null;
  replaces: null;
  asset_id: string;
  symbol: string;
  asset_class: "us_equity";
  notional: string | null;
  qty: string | null;
  filled_qty: string;
  filled_avg_price: null;
  order_class: "simple";
  order_type: string;
  type: string;
  side: string;
  time_in_force: string;
  limit_price: string | null;
  stop_price: string | null;
  status: "accepted";
  extended_hours: boolean;
  legs: null;
}

export interface RejectRule {
  status: number;
  code: number;
  message: string;
}

export interface BrokerSimulator {
  url: string;
  keyId: string;
  secretKey: string;
  /** Orders accepted, in order. */
  readonly orders: readonly SimOrder[];
  /** How many orders were accepted. */
  readonly placed: number;
  /** Every call in order of arrival, as `METHOD path status` ("pending" until answered). */
  readonly calls: string[];
  /** Delay before answering an accepted order (the order exists at once). */
  delayMs: number;
  /** Delay before answering a lookup. */
  lookupDelayMs: number;
  /** The next `n` calls (orders and lookups) fail with `status` (500 by default) and do nothing. */
  failNext(n: number, status?: number): void;
  /** Orders for `symbol` are refused (403 insufficient buying power unless given). */
  reject(symbol: string, rule?: Partial<RejectRule>): void;
  close(): Promise<void>;
}

export interface BrokerSimulatorOptions {
  keyId: string;
  secretKey: string;
  port?: number;
}

const DECIMAL = /^\d+(\.\d{1,9})?$/;
const TYPES = new Set(["market", "limit", "stop", "stop_limit"]);
const TIFS = new Set(["day", "gtc", "opg", "cls", "ioc", "fok"]);

/** Starts the simulator on a free loopback port. */
export function startBrokerSimulator(opts: BrokerSimulatorOptions): Promise<BrokerSimulator> {
  const orders: SimOrder[] = [];
  const byClientId = new Map<string, SimOrder>();
  const calls: { line: string; status: string }[] = [];
  const rules = new Map<string, RejectRule>();
  const closing = new AbortController();
  let failures = { left: 0, status: 500 };

  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });
  const error = (status: number, code: number, message: string) => json(status, { code, message });
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (ms <= 0 || closing.signal.aborted) return resolve();
      const timer = setTimeout(resolve, ms);
      closing.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });

  const placeOrder = async (req: Request): Promise<Response> => {
    let body: Record<string, unknown>;
    try {
      body = await req.json();
    } catch {
      return error(400, 40010000, "request body format is invalid");
    }
    const str = (k: string) => typeof body[k] === "string" ? body[k] as string : undefined;
    const num = (k: string) => {
      const v = body[k];
      if (v === undefined || v === null) return null;
      const s = typeof v === "number" ? String(v) : typeof v === "string" ? v : "";
      return DECIMAL.test(s) && Number(s) > 0 ? s : undefined;
    };
    const symbol = str("symbol");
    const type = str("type") ?? "";
    const tif = str("time_in_force") ?? "";
    const side = str("side") ?? "";
    const qty = num("qty");
    const notional = num("notional");
    const limit = num("limit_price");
    const stop = num("stop_price");
    if (!symbol) return error(422, 40010001, "symbol is required");
    if (side !== "buy" && side !== "sell") return error(422, 40010001, "invalid side");
    if (!TYPES.has(type)) return error(422, 40010001, "invalid order type");
    if (!TIFS.has(tif)) return error(422, 40010001, "invalid time_in_force");
    if (qty === undefined || notional === undefined || limit === undefined || stop === undefined) {
      return error(422, 40010001, "invalid number format");
    }
    if ((qty === null) === (notional === null)) {
      return error(422, 40010001, "qty or notional is required, not both");
    }
    if ((type === "limit" || type === "stop_limit") && limit === null) {
      return error(422, 40010001, "limit_price is required for limit orders");
    }
    if ((type === "stop" || type === "stop_limit") && stop === null) {
      return error(422, 40010001, "stop_price is required for stop orders");
    }
    const clientOrderId = str("client_order_id") ?? crypto.randomUUID();
    if (clientOrderId.length > 48) {
      return error(422, 40010001, "client_order_id must be no more than 48 characters");
    }
    if (byClientId.has(clientOrderId)) {
      return error(422, 40010001, "client_order_id must be unique");
    }
    const rule = rules.get(symbol);
    if (rule) return error(rule.status, rule.code, rule.message);
    const now = new Date().toISOString();
    const order: SimOrder = {
      id: crypto.randomUUID(),
      client_order_id: clientOrderId,
      created_at: now,
      updated_at: now,
      submitted_at: now,
      filled_at: null,
      expired_at: null,
      canceled_at: null,
      failed_at: null,
      replaced_at: null,
      replaced_by: null,
      replaces: null,
      asset_id: crypto.randomUUID(),
      symbol,
      asset_class: "us_equity",
      notional,
      qty,
      filled_qty: "0",
      filled_avg_price: null,
      order_class: "simple",
      order_type: type,
      type,
      side,
      time_in_force: tif,
      limit_price: limit,
      stop_price: stop,
      status: "accepted",
      extended_hours: false,
      legs: null,
    };
    orders.push(order);
    byClientId.set(clientOrderId, order);
    // The order is taken; a slow answer is the "lost answer" a client must recover from.
    await sleep(sim.delayMs);
    return json(200, order);
  };

  const handle = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (
      req.headers.get("apca-api-key-id") !== opts.keyId ||
      req.headers.get("apca-api-secret-key") !== opts.secretKey
    ) {
      return error(401, 40110000, "request is not authorized");
    }
    if (failures.left > 0) {
      failures.left--;
      await req.body?.cancel();
      return failures.status === 429
        ? error(429, 42910000, "rate limit exceeded")
        : error(failures.status, 50010000, "internal server error");
    }
    if (url.pathname === "/v2/orders" && req.method === "POST") return placeOrder(req);
    if (url.pathname === "/v2/orders:by_client_order_id" && req.method === "GET") {
      await sleep(sim.lookupDelayMs);
      const order = byClientId.get(url.searchParams.get("client_order_id") ?? "");
      return order ? json(200, order) : error(404, 40410000, "order not found");
    }
    return error(404, 40410000, "endpoint not found");
  };

  const server = Deno.serve({
    port: opts.port ?? 0,
    hostname: "127.0.0.1",
    onListen: () => {},
  }, async (req) => {
    // Logged on arrival (an order whose answer is held still counts), its status once answered.
    const call = { line: `${req.method} ${new URL(req.url).pathname}`, status: "pending" };
    calls.push(call);
    const res = await handle(req);
    call.status = String(res.status);
    return res;
  });

  const sim: BrokerSimulator = {
    url: `http://127.0.0.1:${server.addr.port}`,
    keyId: opts.keyId,
    secretKey: opts.secretKey,
    get orders() {
      return orders;
    },
    get placed() {
      return orders.length;
    },
    get calls() {
      return calls.map((c) => `${c.line} ${c.status}`);
    },
    delayMs: 0,
    lookupDelayMs: 0,
    failNext(n, status = 500) {
      failures = { left: n, status };
    },
    reject(symbol, rule = {}) {
      rules.set(symbol, {
        status: rule.status ?? 403,
        code: rule.code ?? 40310000,
        message: rule.message ?? "insufficient buying power",
      });
    },
    async close() {
      closing.abort();
      await server.shutdown();
    },
  };
  return Promise.resolve(sim);
}
