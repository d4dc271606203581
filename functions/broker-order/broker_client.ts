/**
 * The broker: a client of Alpaca's Trading API v2 (or any compatible one) for the calls
 * broker-order makes: `POST /v2/orders`, `GET /v2/orders:by_client_order_id`, and for the
 * lifecycle `GET /v2/orders?status=open`, `GET /v2/orders/{id}`, `DELETE /v2/orders/{id}` and
 * the feed of fills `GET /v2/account/activities/FILL` (https://docs.alpaca.markets/reference/postorder,
 * .../getorderbyclientorderid, .../getallorders, .../getorderbyorderid,
 * .../deleteorderbyorderid, .../getaccountactivitiesbyactivitytype), authenticated with the
 * `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers.
 *
 * Every call has a deadline (`fetchWithDeadline`) and goes through the instance's "broker"
 * breaker. Failures come back typed, by what they say about the order:
 * - `BrokerRejected`: the broker refused the order (a 4xx such as 403 "insufficient buying power"
 *   or 422 invalid). Final, and healthy for the breaker (the broker answered).
 * - `BrokerOutcomeUnknown`: the deadline passed, the connection dropped or the broker failed
 *   (5xx) after the order was sent; it may or may not exist: look it up by client_order_id.
 * - `BrokerUnavailable`: the broker turned the call away (429, 401 bad credentials) and did
 *   nothing. Counts toward the breaker; so do timeouts and 5xx.
 * - `CircuitOpen` (503): the breaker is open; nothing was sent.
 *
 * @example
 * ```ts
 * import type { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { BrokerClient, isBrokerHealthy } from "./broker_client.ts";
 *
 * declare const breakers: Breakers;
 * const broker = new BrokerClient({
 *   baseUrl: "https://paper-api.alpaca.markets",
 *   keyId: "key-id",
 *   secretKey: "secret",
 *   timeoutMs: 10_000,
 *   breaker: breakers.get("broker", { isHealthy: isBrokerHealthy }),
 * });
 * const order = await broker.placeOrder({
 *   symbol: "AAPL",
 *   side: "buy",
 *   type: "market",
 *   qty: "1",
 *   time_in_force: "day",
 *   client_order_id: "bo-example",
 * });
 * ```
 */
import type { Platform } from "../../shared/platform/platform.ts";
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import {
  fetchWithDeadline,
  UpstreamTimeout,
  UpstreamUnreachable,
} from "../../shared/resilience/http_client.ts";
import { clip } from "../../shared/text.ts";

/** What broker-order sends to `POST /v2/orders`. */
export interface BrokerOrderRequest {
  symbol: string;
  side: "buy" | "sell";
  type: "market" | "limit" | "stop" | "stop_limit";
  qty?: string;
  notional?: string;
  limit_price?: string;
  stop_price?: string;
  time_in_force: string;
  client_order_id: string;
}

/** The fields of Alpaca's order object that broker-order reads (decimals as strings). */
export interface BrokerOrder {
  id: string;
  client_order_id: string;
  status: string;
  symbol?: string;
  created_at?: string;
  /** When the broker last changed the order: what orders its answers (never backwards). */
  updated_at?: string | null;
  submitted_at?: string | null;
  filled_qty?: string | null;
  filled_avg_price?: string | null;
  filled_at?: string | null;
  canceled_at?: string | null;
  expired_at?: string | null;
}

/**
 * One activity of Alpaca's feed of fills (`GET /v2/account/activities/FILL`), as received: the
 * fields are checked by `brokerFill` (broker_state.ts) before they reach SQL.
 */
export interface BrokerFillActivity {
  /** `YYYYMMDDHHMMSSmmm::uuid`: the feed's order, and the `page_token` of the next page. */
  id: string;
  [field: string]: unknown;
}

/** What `DELETE /v2/orders/{id}` said: accepted (204), not cancelable (422), or no such order. */
export type CancelAnswer = "accepted" | "not_cancelable" | "not_found";

/** The broker refused the order; `reason` is its message in plain words. */
export class BrokerRejected extends Error {
  constructor(readonly status: number, readonly reason: string) {
    super(`The broker rejected the order (${status}): ${reason}`);
    this.name = "BrokerRejected";
  }
  /** Alpaca answers a reused client_order_id with 422 "client_order_id must be unique". */
  get duplicateClientOrderId(): boolean {
    return this.status === 422 && /client_order_id must be unique/i.test(this.reason);
  }
}

/**
 * The order may or may not exist at the broker. `answered`: the broker did answer (a 5xx), so the
 * call is over; otherwise (deadline, dropped connection) it may still be in flight there.
 */
export class BrokerOutcomeUnknown extends Error {
  constructor(readonly why: string, cause?: unknown, readonly answered = false) {
    super(`The broker's answer was lost (${why})`, { cause });
    this.name = "BrokerOutcomeUnknown";
  }
}

/** The broker did not take the call (429, 401, a failed lookup); nothing was done. */
export class BrokerUnavailable extends Error {
  constructor(readonly why: string, readonly retryAfterMs = 1000, cause?: unknown) {
    super(`The broker is unavailable (${why})`, { cause });
    this.name = "BrokerUnavailable";
  }
}

/** For the breaker: a rejection says the broker is up (it answered); anything else does not. */
export function isBrokerHealthy(err: unknown): boolean {
  return err instanceof BrokerRejected;
}

export interface BrokerClientOptions {
  /** `BROKER_API_URL`, e.g. https://paper-api.alpaca.markets (no trailing slash). */
  baseUrl: string;
  keyId: string;
  secretKey: string;
  /** Deadline of each call (BROKER_TIMEOUT_MS). */
  timeoutMs: number;
  breaker: Breaker;
  fetch?: typeof fetch;
}

/** Plain words from a broker error body: its `message`, without markup or control characters. */
function reasonOf(status: number, text: string): string {
  let message = "";
  try {
    const body = JSON.parse(text);
    if (typeof body?.message === "string") message = body.message;
  } catch { /* not JSON: never echo a raw body */ }
  message = clip(
    message.replace(/<[^>]*>/g, " ").replace(/[^\p{L}\p{N}\p{P}\p{Zs}$+<=>^`|~]/gu, "")
      .replace(/\s+/g, " ").trim(),
    200,
  );
  return message || `status ${status}`;
}

/** `Retry-After` (seconds) of a 429, in ms; 1 s when absent. */
function retryAfterMs(res: Response): number {
  const seconds = Number(res.headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 3600) * 1000 : 1000;
}

export class BrokerClient {
  readonly #opts: BrokerClientOptions;
  readonly #headers: Record<string, string>;

  constructor(options: BrokerClientOptions) {
    this.#opts = { ...options, baseUrl: options.baseUrl.replace(/\/+$/, "") };
    this.#headers = {
      "apca-api-key-id": options.keyId,
      "apca-api-secret-key": options.secretKey,
      "accept": "application/json",
    };
  }

  /**
   * Places an order. Returns the broker's order; throws BrokerRejected, BrokerOutcomeUnknown,
   * BrokerUnavailable or CircuitOpen (see the module's summary).
   */
  placeOrder(order: BrokerOrderRequest, signal?: AbortSignal): Promise<BrokerOrder> {
    return this.#opts.breaker.run(async () => {
      let res: Response;
      let text: string;
      try {
        [res, text] = await fetchWithDeadline(
          `${this.#opts.baseUrl}/v2/orders`,
          {
            method: "POST",
            headers: { ...this.#headers, "content-type": "application/json" },
            body: JSON.stringify(order),
          },
          { timeoutMs: this.#opts.timeoutMs, upstream: "broker", signal, fetch: this.#opts.fetch },
          async (r) => [r, await r.text()] as [Response, string],
        );
      } catch (err) {
        // Refused: nothing reached the broker. Anything else may have reached it.
        if (refused(err)) throw new BrokerUnavailable("connection refused", 1000, err);
        throw unknownOutcome(err);
      }
      if (res.ok) return parseOrder(text, () => new BrokerOutcomeUnknown("unreadable order"));
      if (res.status === 429 || res.status === 401) {
        const why = res.status === 429 ? "rate limited" : "credentials refused";
        throw new BrokerUnavailable(why, retryAfterMs(res));
      }
      if (res.status >= 400 && res.status < 500) {
        throw new BrokerRejected(res.status, reasonOf(res.status, text));
      }
      // A 5xx may come after the order was taken (a gateway timing out on the broker's backend).
      throw new BrokerOutcomeUnknown(`status ${res.status}`, undefined, true);
    });
  }

  /**
   * The order with `clientOrderId`, or null when the broker has none (404). Throws
   * BrokerUnavailable when the broker cannot say (timeout, 5xx, 429…), or CircuitOpen.
   */
  orderByClientOrderId(clientOrderId: string, signal?: AbortSignal): Promise<BrokerOrder | null> {
    return this.#opts.breaker.run(async () => {
      const url = `${this.#opts.baseUrl}/v2/orders:by_client_order_id?client_order_id=${
        encodeURIComponent(clientOrderId)
      }`;
      let res: Response;
      let text: string;
      try {
        [res, text] = await fetchWithDeadline(
          url,
          { method: "GET", headers: this.#headers },
          { timeoutMs: this.#opts.timeoutMs, upstream: "broker", signal, fetch: this.#opts.fetch },
          async (r) => [r, await r.text()] as [Response, string],
        );
      } catch (err) {
        throw new BrokerUnavailable(`lookup failed: ${unknownOutcome(err).why}`, 1000, err);
      }
      if (res.status === 404) return null;
      if (res.ok) {
        return parseOrder(text, () => new BrokerUnavailable("unreadable order on lookup"));
      }
      throw new BrokerUnavailable(`lookup answered status ${res.status}`, retryAfterMs(res));
    });
  }

  /**
   * The broker's open orders, newest first, up to `limit` (Alpaca's maximum is 500) submitted
   * at or before `until` (the next page of a full one). Throws BrokerUnavailable or CircuitOpen.
   */
  async openOrders(
    opts: { limit: number; until?: string },
    signal?: AbortSignal,
  ): Promise<BrokerOrder[]> {
    const q = new URLSearchParams({
      status: "open",
      limit: String(opts.limit),
      direction: "desc",
      nested: "false",
    });
    if (opts.until) q.set("until", opts.until);
    const text = await this.#read(`/v2/orders?${q}`, "open orders", signal);
    let body: unknown;
    try {
      body = JSON.parse(text ?? "");
    } catch {
      body = undefined;
    }
    if (!Array.isArray(body)) throw new BrokerUnavailable("unreadable open orders");
    return body.map((o) => parseOrder(JSON.stringify(o), () => new BrokerUnavailable("bad order")));
  }

  /**
   * One page of the account's fills, oldest first (`direction=asc`): those after the activity
   * `pageToken`, or else those after the time `after`, up to `pageSize` (Alpaca's maximum is
   * 100). Throws BrokerUnavailable (an unreadable page too) or CircuitOpen.
   */
  async fills(
    opts: { pageSize: number; pageToken?: string; after?: string },
    signal?: AbortSignal,
  ): Promise<BrokerFillActivity[]> {
    const q = new URLSearchParams({ direction: "asc", page_size: String(opts.pageSize) });
    if (opts.pageToken) q.set("page_token", opts.pageToken);
    else if (opts.after) q.set("after", opts.after);
    const text = await this.#read(`/v2/account/activities/FILL?${q}`, "fills", signal);
    let body: unknown;
    try {
      body = JSON.parse(text ?? "");
    } catch {
      body = undefined;
    }
    // Without every activity's id the page cannot be followed: the whole page is unreadable.
    if (
      !Array.isArray(body) ||
      !body.every((a) => typeof a?.id === "string" && a.id.length > 0 && a.id.length <= 200)
    ) {
      throw new BrokerUnavailable("unreadable fills");
    }
    return body as BrokerFillActivity[];
  }

  /** The order with the broker's `id`, or null (404). Throws BrokerUnavailable or CircuitOpen. */
  async order(id: string, signal?: AbortSignal): Promise<BrokerOrder | null> {
    const text = await this.#read(`/v2/orders/${encodeURIComponent(id)}`, "order", signal);
    if (text === null) return null;
    return parseOrder(text, () => new BrokerUnavailable("unreadable order"));
  }

  /**
   * Asks the broker to cancel order `id` (Alpaca: 204 accepted, 422 no longer cancelable, 404
   * unknown). Throws BrokerUnavailable or CircuitOpen when the broker cannot say.
   */
  cancelOrder(id: string, signal?: AbortSignal): Promise<CancelAnswer> {
    return this.#opts.breaker.run(async () => {
      let res: Response;
      try {
        [res] = await fetchWithDeadline(
          `${this.#opts.baseUrl}/v2/orders/${encodeURIComponent(id)}`,
          { method: "DELETE", headers: this.#headers },
          { timeoutMs: this.#opts.timeoutMs, upstream: "broker", signal, fetch: this.#opts.fetch },
          async (r) => [r, await r.text()] as [Response, string],
        );
      } catch (err) {
        throw new BrokerUnavailable(`cancel failed: ${unknownOutcome(err).why}`, 1000, err);
      }
      if (res.status === 204 || res.status === 200) return "accepted";
      if (res.status === 422) return "not_cancelable";
      if (res.status === 404) return "not_found";
      throw new BrokerUnavailable(`cancel answered status ${res.status}`, retryAfterMs(res));
    });
  }

  /** A GET through the breaker: the body text, or null on 404; BrokerUnavailable otherwise. */
  #read(path: string, what: string, signal?: AbortSignal): Promise<string | null> {
    return this.#opts.breaker.run(async () => {
      let res: Response;
      let text: string;
      try {
        [res, text] = await fetchWithDeadline(
          `${this.#opts.baseUrl}${path}`,
          { method: "GET", headers: this.#headers },
          { timeoutMs: this.#opts.timeoutMs, upstream: "broker", signal, fetch: this.#opts.fetch },
          async (r) => [r, await r.text()] as [Response, string],
        );
      } catch (err) {
        throw new BrokerUnavailable(`${what} read failed: ${unknownOutcome(err).why}`, 1000, err);
      }
      if (res.status === 404) return null;
      if (res.ok) return text;
      throw new BrokerUnavailable(`${what} read answered status ${res.status}`, retryAfterMs(res));
    });
  }
}

/** Errors of the call itself: a deadline or a dropped connection leaves the outcome unknown. */
function unknownOutcome(err: unknown): BrokerOutcomeUnknown {
  if (err instanceof UpstreamTimeout) return new BrokerOutcomeUnknown("deadline passed", err);
  if (err instanceof UpstreamUnreachable) return new BrokerOutcomeUnknown("connection failed", err);
  return new BrokerOutcomeUnknown("call failed", err);
}

/** The connection was refused: the request never left this instance. */
function refused(err: unknown): boolean {
  if (!(err instanceof UpstreamUnreachable)) return false;
  const cause = err.cause as { name?: string; message?: string; cause?: { name?: string } };
  return cause?.name === "ConnectionRefused" || cause?.cause?.name === "ConnectionRefused" ||
    /connection refused|os error 111/i.test(String(cause?.message));
}

function parseOrder(text: string, fail: () => Error): BrokerOrder {
  let body: Partial<BrokerOrder>;
  try {
    body = JSON.parse(text);
  } catch {
    throw fail();
  }
  if (typeof body?.id !== "string" || typeof body.client_order_id !== "string") throw fail();
  const text_ = (v: unknown) => typeof v === "string" ? v : null;
  return {
    id: body.id,
    client_order_id: body.client_order_id,
    status: typeof body.status === "string" ? body.status : "new",
    symbol: body.symbol,
    created_at: body.created_at,
    updated_at: text_(body.updated_at),
    submitted_at: text_(body.submitted_at),
    filled_qty: text_(body.filled_qty),
    filled_avg_price: text_(body.filled_avg_price),
    filled_at: text_(body.filled_at),
    canceled_at: text_(body.canceled_at),
    expired_at: text_(body.expired_at),
  };
}

/** The client for broker-order's configuration, with the platform's `broker` breaker and fetch. */
export function brokerClientFor(
  config: { BROKER_API_URL: string; BROKER_API_KEY_ID: string; BROKER_API_SECRET_KEY: string },
  platform: Pick<Platform, "breakers" | "fetch" | "limits">,
): BrokerClient {
  return new BrokerClient({
    baseUrl: config.BROKER_API_URL,
    keyId: config.BROKER_API_KEY_ID,
    secretKey: config.BROKER_API_SECRET_KEY,
    timeoutMs: platform.limits.BROKER_TIMEOUT_MS,
    breaker: platform.breakers.get("broker", { isHealthy: isBrokerHealthy }),
    fetch: platform.fetch,
  });
}
