/**
 * A simulated Alpaca Trading API v2 on loopback, for the sandbox and the tests: a little broker
 * with Alpaca's documented shapes and errors (https://docs.alpaca.markets/reference/postorder,
 * .../getallorders, .../getorderbyorderid, .../deleteorderbyorderid,
 * .../getaccountactivitiesbyactivitytype):
 * - `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` checked on every call, else `401`;
 * - `POST /v2/orders` answers `200` with an order object (uuid `id`, `status: "accepted"`…);
 *   a reused `client_order_id` gets `422 {"code": 40010001, "message": "client_order_id must be unique"}`;
 *   an invalid order `422`; a rejected one (a reject rule) e.g. `403 {"code": 40310000,
 *   "message": "insufficient buying power"}`;
 * - `GET /v2/orders:by_client_order_id?client_order_id=…` answers the order, or `404`;
 * - `GET /v2/orders?status=open|closed|all&limit=&direction=&until=&after=` (limit up to 500;
 *   `after` and `until` exclusive, as Alpaca's),
 *   `GET /v2/orders/{id}` (`404` unknown), `DELETE /v2/orders/{id}` (`204` accepted while open,
 *   `422 {"code": 42210000, "message": "order is not cancelable"}` once closed, `404` unknown);
 * - `GET /v2/account/activities/FILL?direction=&after=&until=&page_size=&page_token=`: one
 *   activity per fill (`fill` / `partial_fill`, with `cum_qty`, `leaves_qty`, `order_status`).
 *
 * Orders move on as at a broker, on the simulator's clock (`step()`, `advance(ms)`; with `auto`
 * a timer steps it, as the sandbox runs it): a market order fills FILL_DELAY after it is accepted
 * (an order of 2 or more whole shares fills half first, the rest one FILL_DELAY later); a limit
 * order fills when the quote crosses its price (`priceOf`, by default the market-data
 * simulator's deterministic quote, overridden with `setPrice`), a stop order once the quote
 * reaches its stop price (a stop_limit then as a limit order); a `day` order not filled within
 * `dayMs` expires; a cancel is honoured while the order is open.
 *
 * Test controls: `placed`, `calls`, `delayMs` (accept the order at once but answer late: a lost
 * answer), `lookupDelayMs`, `failNext(n, status)`, `reject(symbol)`, `fillNow(id, qty?)`,
 * `setPrice`, `advance`, `step`, `down`.
 *
 * @example
 * ```ts
 * import { startBrokerSimulator } from "./broker.ts";
 *
 * const broker = await startBrokerSimulator({ keyId: "k", secretKey: "s" });
 * broker.delayMs = 2_000; // the next order is taken, its answer comes after the caller's deadline
 * broker.advance(60_000); // a minute passes at the broker: market orders fill
 * await broker.close();
 * ```
 */
import { quotePrice } from "./market_data.ts";

/** An order as Alpaca's API returns it (the fields a client reads; the others null). */
export interface SimOrder {
  id: string;
  client_order_id: string;
  created_at: string;
  updated_at: string;
  submitted_at: string;
  filled_at: string | null;
  expired_at: string | null;
  canceled_at: string | null;
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
  filled_avg_price: string | null;
  order_class: "simple";
  order_type: string;
  type: string;
  side: string;
  time_in_force: string;
  limit_price: string | null;
  stop_price: string | null;
  status: string;
  extended_hours: boolean;
  legs: null;
}

/** One fill, as `GET /v2/account/activities/FILL` lists it. */
export interface SimFill {
  id: string;
  activity_type: "FILL";
  transaction_time: string;
  type: "fill" | "partial_fill";
  price: string;
  qty: string;
  side: string;
  symbol: string;
  leaves_qty: string;
  order_id: string;
  cum_qty: string;
  order_status: string;
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
  /** Fills, in order. */
  readonly fills: readonly SimFill[];
  /** How many orders were accepted. */
  readonly placed: number;
  /** Every call in order of arrival, as `METHOD path status` ("pending" until answered). */
  readonly calls: string[];
  /** Delay before answering an accepted order (the order exists at once). */
  delayMs: number;
  /** Delay before answering a lookup. */
  lookupDelayMs: number;
  /** While true, every call answers `503` and does nothing. */
  down: boolean;
  /** The next `n` calls (any endpoint) fail with `status` (500 by default) and do nothing. */
  failNext(n: number, status?: number): void;
  /** Orders for `symbol` are refused (403 insufficient buying power unless given). */
  reject(symbol: string, rule?: Partial<RejectRule>): void;
  /** The simulator's clock (ms): real time plus what `advance` added. */
  now(): number;
  /** Moves the clock on by `ms`, then steps. */
  advance(ms: number): void;
  /** Moves every open order on as the clock says (fills, expiries). */
  step(): void;
  /** Fills order `id` (broker id) now: `qty` more (default all that is left), at the quote. */
  fillNow(id: string, qty?: string): void;
  /** The quote of `symbol` from now on. */
  setPrice(symbol: string, price: number): void;
  close(): Promise<void>;
}

export interface BrokerSimulatorOptions {
  keyId: string;
  secretKey: string;
  port?: number;
  /** Step on a real timer every this many ms (the sandbox); default off (tests step it). */
  autoStepMs?: number;
  /** Time from acceptance to a market order's (first) fill. Default 1000 ms. */
  fillDelayMs?: number;
  /** A day order's life before it expires. Default 6.5 h. */
  dayMs?: number;
  /** The quote of a symbol (default: the market-data simulator's). */
  priceOf?: (symbol: string) => number;
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
  const byId = new Map<string, SimOrder>();
  const fills: SimFill[] = [];
  const prices = new Map<string, number>();
  const fillDelayMs = opts.fillDelayMs ?? 1_000;
  const dayMs = opts.dayMs ?? 6.5 * 3_600_000;
  let offset = 0;
  let lastStamp = 0;
  const clock = () => Date.now() + offset;
  /** A time for a change: the clock, strictly after the previous one (updated_at orders answers). */
  const stamp = () => {
    lastStamp = Math.max(clock(), lastStamp + 1);
    return new Date(lastStamp).toISOString();
  };
  const priceOf = (symbol: string) => prices.get(symbol) ?? (opts.priceOf ?? quotePrice)(symbol);
  const OPEN = new Set(["new", "accepted", "partially_filled", "pending_new", "pending_cancel"]);
  const isOpen = (o: SimOrder) => OPEN.has(o.status);
  const dec = (n: number) => String(Number(n.toFixed(9)));

  /** Fills `qty` more of `o` at `price` (a weighted average with earlier fills). */
  const fill = (o: SimOrder, qty: number, price: number) => {
    const total = o.qty !== null ? Number(o.qty) : Number(o.notional) / price;
    const before = Number(o.filled_qty);
    const done = Math.min(total, before + qty);
    const got = done - before;
    if (got <= 0) return;
    const avg = before === 0 ? price : (Number(o.filled_avg_price) * before + price * got) / done;
    const now = stamp();
    const complete = done >= total - 1e-9;
    o.filled_qty = dec(done);
    o.filled_avg_price = dec(avg);
    o.status = complete ? "filled" : "partially_filled";
    if (complete) o.filled_at = now;
    o.updated_at = now;
    fills.push({
      id: `${now.replace(/\D/g, "").slice(0, 17)}::${crypto.randomUUID()}`,
      activity_type: "FILL",
      transaction_time: now,
      type: complete ? "fill" : "partial_fill",
      price: dec(price),
      qty: dec(got),
      side: o.side,
      symbol: o.symbol,
      leaves_qty: dec(total - done),
      order_id: o.id,
      cum_qty: o.filled_qty,
      order_status: o.status,
    });
  };

  const step = () => {
    const now = clock();
    for (const o of orders) {
      if (!isOpen(o)) continue;
      if (o.status === "pending_cancel") {
        o.status = "canceled";
        o.canceled_at = o.updated_at = stamp();
        continue;
      }
      const age = now - Date.parse(o.submitted_at);
      const price = priceOf(o.symbol);
      if (o.type === "market" && age >= fillDelayMs) {
        const total = o.qty !== null ? Number(o.qty) : null;
        const whole = total !== null && total >= 2 && Number.isInteger(total);
        if (whole && Number(o.filled_qty) === 0) fill(o, Math.floor(total / 2), price);
        else if (!whole || age >= 2 * fillDelayMs) fill(o, Infinity, price);
      } else if (o.type !== "market") {
        const ask = price + 0.01;
        // A stop order triggers when the quote reaches its stop price (then it is a market or,
        // stop_limit, a limit order); a limit order fills when the quote crosses its price.
        const stop = o.stop_price === null ? null : Number(o.stop_price);
        const triggered = stop === null || (o.side === "buy" ? ask >= stop : price <= stop);
        const limit = o.limit_price === null ? null : Number(o.limit_price);
        const crosses = limit === null || (o.side === "buy" ? ask <= limit : price >= limit);
        if (triggered && crosses) fill(o, Infinity, o.side === "buy" ? ask : price);
      }
      if (isOpen(o) && o.time_in_force === "day" && age >= dayMs) {
        o.status = "expired";
        o.expired_at = o.updated_at = stamp();
      }
    }
  };

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
    const now = stamp();
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
    byId.set(order.id, order);
    // The order is taken; a slow answer is the "lost answer" a client must recover from.
    await sleep(sim.delayMs);
    return json(200, order);
  };

  const listOrders = (url: URL): Response => {
    const q = url.searchParams;
    const status = q.get("status") ?? "open";
    const limit = Number(q.get("limit") ?? 50);
    if (!["open", "closed", "all"].includes(status)) {
      return error(422, 40010001, "invalid status");
    }
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) {
      return error(422, 40010001, "limit must be between 1 and 500");
    }
    const until = q.get("until");
    const after = q.get("after");
    const asc = q.get("direction") === "asc";
    const picked = orders.filter((o) =>
      (status === "all" || (status === "open") === isOpen(o)) &&
      (!until || Date.parse(o.submitted_at) < Date.parse(until)) &&
      (!after || Date.parse(o.submitted_at) > Date.parse(after))
    );
    picked.sort((a, b) => Date.parse(a.submitted_at) - Date.parse(b.submitted_at));
    if (!asc) picked.reverse();
    return json(200, picked.slice(0, limit));
  };

  const listFills = (url: URL): Response => {
    const q = url.searchParams;
    const pageSize = Number(q.get("page_size") ?? 100);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) {
      return error(422, 40010001, "page_size must be between 1 and 100");
    }
    const asc = q.get("direction") === "asc";
    const after = q.get("after");
    const until = q.get("until");
    let list = fills.filter((f) =>
      (!after || Date.parse(f.transaction_time) > Date.parse(after)) &&
      (!until || Date.parse(f.transaction_time) <= Date.parse(until))
    );
    if (!asc) list = list.slice().reverse();
    // Alpaca's ids are the time (17 digits) then `::` and a uuid: a page_token is a place in
    // that order (asc: the activities after it; desc: those before it), listed or not.
    const token = q.get("page_token");
    if (token) list = list.filter((f) => asc ? f.id > token : f.id < token);
    return json(200, list.slice(0, pageSize));
  };

  const handle = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (
      req.headers.get("apca-api-key-id") !== opts.keyId ||
      req.headers.get("apca-api-secret-key") !== opts.secretKey
    ) {
      return error(401, 40110000, "request is not authorized");
    }
    if (sim.down) {
      await req.body?.cancel();
      return error(503, 50300000, "service unavailable");
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
    if (url.pathname === "/v2/orders" && req.method === "GET") return listOrders(url);
    const one = /^\/v2\/orders\/([^/]+)$/.exec(url.pathname);
    if (one && req.method === "GET") {
      const order = byId.get(decodeURIComponent(one[1]));
      return order ? json(200, order) : error(404, 40410000, "order not found");
    }
    if (one && req.method === "DELETE") {
      const order = byId.get(decodeURIComponent(one[1]));
      if (!order) return error(404, 40410000, "order not found");
      if (!isOpen(order) || order.status === "pending_cancel") {
        return error(422, 42210000, "order is not cancelable");
      }
      // Alpaca: the cancel is accepted (204) and the order goes pending_cancel, then canceled.
      order.status = "pending_cancel";
      order.updated_at = stamp();
      return new Response(null, { status: 204 });
    }
    if (url.pathname === "/v2/account/activities/FILL" && req.method === "GET") {
      return listFills(url);
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
    get fills() {
      return fills;
    },
    down: false,
    now: clock,
    advance(ms) {
      offset += ms;
      step();
    },
    step,
    fillNow(id, qty) {
      const o = byId.get(id);
      if (!o || !isOpen(o)) throw new Error(`No open order ${id}`);
      fill(o, qty === undefined ? Infinity : Number(qty), priceOf(o.symbol));
    },
    setPrice(symbol, price) {
      prices.set(symbol, price);
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
      clearInterval(ticker);
      closing.abort();
      await server.shutdown();
    },
  };
  const ticker = opts.autoStepMs ? setInterval(step, opts.autoStepMs) : undefined;
  return Promise.resolve(sim);
}
