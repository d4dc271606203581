/**
 * A simulated Stripe on loopback, for the tests and the sandbox: the events it creates are
 * signed with the real `stripe` library exactly as Stripe signs webhooks and POSTed to the
 * webhook URL (unless a delivery is dropped), and they are all listed by its `GET /v1/events`,
 * as Stripe's API lists them (https://docs.stripe.com/api/events/list), so a lost webhook can be
 * caught up.
 *
 * `GET /v1/events`: `Authorization: Bearer <the secret key>` (else `401`, Stripe's error shape);
 * answers `{"object": "list", "data": [...], "has_more", "url": "/v1/events"}`, newest first
 * (by `created`, then by creation order); parameters `limit` (1 to 100, default 10),
 * `starting_after` / `ending_before` (an event id; not both), `created` as a number or
 * `created[gt|gte|lt|lte]`, `type`, `types[]` (up to 20; not with `type`), in Stripe's form
 * encoding (`types[]=a` or `types[0]=a`). A bad parameter is Stripe's `400`:
 * `{"error": {"type": "invalid_request_error", "message", "param"}}`.
 *
 * Sandbox controls (not Stripe's): `POST /_sandbox/checkout {"user_id", "amount_total"?,
 * "deliver"?}` creates a paid `checkout.session.completed` for the user and delivers it unless
 * `"deliver": false` (a lost webhook); `POST /_sandbox/drop-next {"count"}` drops the next
 * deliveries.
 *
 * @example
 * ```ts
 * import { startStripeSimulator } from "./stripe.ts";
 *
 * const sim = await startStripeSimulator({
 *   secretKey: "sk_test_example",
 *   webhookSecret: "whsec_example",
 *   webhookUrl: "http://127.0.0.1:54321/functions/v1/payment-webhook",
 * });
 * await sim.emit({ type: "invoice.paid", object: { id: "in_1" } }, { deliver: false });
 * await fetch(`${sim.url}/v1/events?limit=1`, { headers: { authorization: "Bearer sk_test_example" } });
 * await sim.close();
 * ```
 */
import Stripe from "stripe";

export interface StripeSimulatorOptions {
  /** The API key `GET /v1/events` accepts (`sk_…`). */
  secretKey: string;
  /** The endpoint's signing secret (`whsec_…`) deliveries are signed with. */
  webhookSecret: string;
  /** Where events are delivered; none: events are only listed. */
  webhookUrl?: string;
  /** Told of each event created and its delivery. */
  print?: (line: string) => void;
}

/** A stored event: the envelope Stripe posts and lists. */
export interface SimulatedEvent {
  id: string;
  object: "event";
  api_version: string;
  created: number;
  data: { object: Record<string, unknown>; previous_attributes?: Record<string, unknown> };
  livemode: boolean;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  type: string;
}

export interface EmitOptions {
  /** Default true; false drops the delivery (the event is still listed). */
  deliver?: boolean;
  /** `created`, seconds since the epoch (default now). */
  created?: number;
  id?: string;
}

/** What a delivery did. */
export type Delivery = { delivered: true; status: number } | { delivered: false; reason: string };

export interface StripeSimulator {
  url: string;
  /** Where events are delivered (settable: a test's server may start after the simulator). */
  webhookUrl: string | undefined;
  /** Every event, in creation order. */
  readonly events: readonly SimulatedEvent[];
  /** `GET /v1/events` requests answered (any status) since start or `resetCalls()`. */
  readonly listCalls: number;
  /** The query string of each list request, in order. */
  readonly listQueries: URLSearchParams[];
  resetCalls(): void;
  /** While true, `GET /v1/events` answers Stripe's `500 api_error`. */
  down: boolean;
  /** Runs before each list request is answered (a test creates events mid-paging here). */
  beforeList?: (call: number) => void | Promise<void>;
  /** The next `n` deliveries are dropped. */
  dropNext(n: number): void;
  /** Creates an event of `type` over `object`, lists it, and delivers it unless dropped. */
  emit(
    event: { type: string; object: Record<string, unknown> } | SimulatedEvent,
    opts?: EmitOptions,
  ): Promise<{ event: SimulatedEvent; delivery: Delivery }>;
  /** Signs and POSTs a stored event to the webhook URL again (Stripe's "resend"). */
  deliver(event: SimulatedEvent): Promise<Delivery>;
  close(): Promise<void>;
}

const API_VERSION = "2026-10-28.endive";
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A Stripe-style id: prefix and 24 random alphanumerics. */
function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `${prefix}_${Array.from(bytes, (b) => ALPHABET[b % ALPHABET.length]).join("")}`;
}

class ParamError extends Error {
  constructor(readonly param: string | undefined, message: string, readonly code?: string) {
    super(message);
  }
}

interface ListQuery {
  limit: number;
  startingAfter?: string;
  endingBefore?: string;
  created: { gt?: number; gte?: number; lt?: number; lte?: number };
  types?: Set<string>;
}

const CREATED_OPS = ["gt", "gte", "lt", "lte"] as const;

/** Stripe's form-encoded list parameters, validated as Stripe does. */
function parseQuery(params: URLSearchParams): ListQuery {
  const q: ListQuery = { limit: 10, created: {} };
  const types: string[] = [];
  let type: string | undefined;
  const integer = (param: string, value: string) => {
    if (!/^-?\d+$/.test(value)) {
      throw new ParamError(param, `Invalid integer: ${value}`);
    }
    return Number(value);
  };
  for (const [key, value] of params) {
    let m: RegExpExecArray | null;
    if (key === "limit") {
      const n = integer("limit", value);
      if (n < 1 || n > 100) {
        throw new ParamError(
          "limit",
          "This value must be greater than or equal to 1 and less than or equal to 100.",
        );
      }
      q.limit = n;
    } else if (key === "starting_after") q.startingAfter = value;
    else if (key === "ending_before") q.endingBefore = value;
    else if (key === "created") {
      const n = integer("created", value);
      q.created = { gte: n, lte: n };
    } else if ((m = /^created\[(\w+)\]$/.exec(key))) {
      const op = m[1] as typeof CREATED_OPS[number];
      if (!CREATED_OPS.includes(op)) {
        throw new ParamError(`created[${m[1]}]`, `Received unknown parameter: created[${m[1]}]`);
      }
      q.created[op] = integer(`created[${op}]`, value);
    } else if (key === "type") type = value;
    else if (/^types\[\d*\]$/.test(key)) types.push(value);
    else if (key === "delivery_success" || /^expand\[\d*\]$/.test(key)) {
      // Accepted and not simulated.
    } else throw new ParamError(key, `Received unknown parameter: ${key}`);
  }
  if (q.startingAfter && q.endingBefore) {
    throw new ParamError(
      undefined,
      "You may only specify one of these parameters: ending_before, starting_after.",
    );
  }
  if (type !== undefined && types.length) {
    throw new ParamError("types", "You may pass either `type` or `types`, but not both.");
  }
  if (types.length > 20) {
    throw new ParamError("types", "You may pass at most 20 event types.");
  }
  if (type !== undefined) q.types = new Set([type]);
  else if (types.length) q.types = new Set(types);
  return q;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "request-id": newId("req") },
  });

const stripeError = (status: number, type: string, message: string, extra = {}) =>
  json(status, { error: { type, message, ...extra } });

/** Starts the simulator on a free loopback port. */
export function startStripeSimulator(opts: StripeSimulatorOptions): Promise<StripeSimulator> {
  const stripe = new Stripe(opts.secretKey, { httpClient: Stripe.createFetchHttpClient() });
  const cryptoProvider = Stripe.createSubtleCryptoProvider();
  const events: SimulatedEvent[] = [];
  /** Creation order of each event: the tie-break between events of the same second. */
  const order = new Map<string, number>();
  let listCalls = 0;
  let listQueries: URLSearchParams[] = [];
  let drop = 0;
  const inFlight = new Set<Promise<unknown>>();

  /** Newer first: created, then creation order. */
  const newerFirst = (a: SimulatedEvent, b: SimulatedEvent) =>
    b.created - a.created || order.get(b.id)! - order.get(a.id)!;

  function list(q: ListQuery): Response {
    const byId = (id: string, param: string) => {
      const found = events.find((e) => e.id === id);
      if (!found) throw new ParamError(param, `No such event: '${id}'`, "resource_missing");
      return found;
    };
    const c = q.created;
    let matching = events.filter((e) =>
      (!q.types || q.types.has(e.type)) &&
      (c.gt === undefined || e.created > c.gt) && (c.gte === undefined || e.created >= c.gte) &&
      (c.lt === undefined || e.created < c.lt) && (c.lte === undefined || e.created <= c.lte)
    ).sort(newerFirst);
    let data: SimulatedEvent[];
    let hasMore: boolean;
    if (q.startingAfter) {
      const cursor = byId(q.startingAfter, "starting_after");
      matching = matching.filter((e) => newerFirst(cursor, e) < 0); // older than the cursor
      data = matching.slice(0, q.limit);
      hasMore = matching.length > q.limit;
    } else if (q.endingBefore) {
      const cursor = byId(q.endingBefore, "ending_before");
      matching = matching.filter((e) => newerFirst(e, cursor) < 0); // newer than the cursor
      data = matching.slice(Math.max(0, matching.length - q.limit));
      hasMore = matching.length > q.limit;
    } else {
      data = matching.slice(0, q.limit);
      hasMore = matching.length > q.limit;
    }
    return json(200, { object: "list", data, has_more: hasMore, url: "/v1/events" });
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/_sandbox/checkout" && req.method === "POST") {
      const body = await req.json().catch(() => ({}));
      const { event, delivery } = await emit({
        type: "checkout.session.completed",
        object: checkoutSession(body.user_id, body.amount_total),
      }, { deliver: body.deliver !== false });
      return json(200, { id: event.id, delivery });
    }
    if (url.pathname === "/_sandbox/drop-next" && req.method === "POST") {
      const body = await req.json().catch(() => ({}));
      drop += Number.isInteger(body.count) && body.count > 0 ? body.count : 1;
      return json(200, { dropping: drop });
    }
    if (url.pathname !== "/v1/events" || req.method !== "GET") {
      return stripeError(
        404,
        "invalid_request_error",
        `Unrecognized request URL (${req.method}: ${url.pathname}).`,
      );
    }
    listCalls++;
    listQueries.push(url.searchParams);
    await sim.beforeList?.(listCalls);
    const key = /^Bearer (\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
    if (!key) {
      return stripeError(
        401,
        "invalid_request_error",
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.",
      );
    }
    if (key !== opts.secretKey) {
      return stripeError(
        401,
        "invalid_request_error",
        `Invalid API Key provided: ${key.slice(0, 8)}***`,
      );
    }
    if (sim.down) {
      return stripeError(500, "api_error", "Something went wrong on Stripe's end.");
    }
    try {
      return list(parseQuery(url.searchParams));
    } catch (err) {
      if (!(err instanceof ParamError)) throw err;
      return stripeError(400, "invalid_request_error", err.message, {
        ...(err.param ? { param: err.param } : {}),
        ...(err.code ? { code: err.code } : {}),
      });
    }
  }

  async function deliver(event: SimulatedEvent): Promise<Delivery> {
    const webhookUrl = sim.webhookUrl;
    if (!webhookUrl) return { delivered: false, reason: "no webhook URL" };
    const payload = JSON.stringify(event, null, 2);
    const signature = await stripe.webhooks.generateTestHeaderStringAsync({
      payload,
      secret: opts.webhookSecret,
      cryptoProvider,
    });
    try {
      const res = await fetch(webhookUrl, {
        method: "POST",
        headers: {
          "content-type": "application/json; charset=utf-8",
          "stripe-signature": signature,
          "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
        body: payload,
      });
      await res.body?.cancel();
      return { delivered: true, status: res.status };
    } catch (err) {
      return { delivered: false, reason: `unreachable: ${(err as Error).message}` };
    }
  }

  async function emit(
    input: { type: string; object: Record<string, unknown> } | SimulatedEvent,
    emitOpts: EmitOptions = {},
  ): Promise<{ event: SimulatedEvent; delivery: Delivery }> {
    const event: SimulatedEvent = "data" in input ? { ...input } : {
      id: emitOpts.id ?? newId("evt"),
      object: "event",
      api_version: API_VERSION,
      created: emitOpts.created ?? Math.floor(Date.now() / 1000),
      data: { object: input.object },
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type: input.type,
    };
    if (order.has(event.id)) throw new Error(`Event ${event.id} exists already`);
    order.set(event.id, order.size);
    events.push(event);
    let delivery: Delivery;
    if (emitOpts.deliver === false) delivery = { delivered: false, reason: "dropped" };
    else if (drop > 0) {
      drop--;
      delivery = { delivered: false, reason: "dropped" };
    } else {
      const work = deliver(event);
      inFlight.add(work);
      delivery = await work.finally(() => inFlight.delete(work));
    }
    opts.print?.(
      `[stripe] ${event.type} ${event.id} ${
        delivery.delivered ? `delivered (${delivery.status})` : `NOT delivered (${delivery.reason})`
      }`,
    );
    return { event, delivery };
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  const sim: StripeSimulator = {
    url: `http://127.0.0.1:${server.addr.port}`,
    webhookUrl: opts.webhookUrl,
    get events() {
      return events;
    },
    get listCalls() {
      return listCalls;
    },
    get listQueries() {
      return listQueries;
    },
    resetCalls() {
      listCalls = 0;
      listQueries = [];
    },
    down: false,
    dropNext(n) {
      drop += n;
    },
    emit,
    deliver,
    async close() {
      await Promise.allSettled([...inFlight]);
      await server.shutdown();
    },
  };
  return Promise.resolve(sim);
}

/** A paid Checkout Session for `userId` (https://docs.stripe.com/api/checkout/sessions/object). */
function checkoutSession(userId: unknown, amount: unknown): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  const total = Number.isInteger(amount) && (amount as number) > 0 ? amount as number : 4900;
  return {
    id: newId("cs_test"),
    object: "checkout.session",
    amount_subtotal: total,
    amount_total: total,
    client_reference_id: typeof userId === "string" ? userId : null,
    created: now,
    currency: "usd",
    customer: newId("cus"),
    livemode: false,
    metadata: {},
    mode: "payment",
    payment_intent: newId("pi"),
    payment_status: "paid",
    status: "complete",
  };
}
