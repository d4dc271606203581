/**
 * The clients: bounded, seeded loops of mixed requests (orders new, replayed and cancelled,
 * Stripe webhooks new, duplicated, out of order and never delivered, alerts with and without a
 * dedupKey, quotes, logins, tools, status) and the ledger each request leaves, which the
 * invariants account for at the end. Every request goes through `call()`, so it is in the
 * history too.
 *
 * Adding a load kind is adding one entry to LOAD_KINDS; `available` switches it on where the
 * branch has the route it needs.
 */
import { delay } from "../../shared/resilience/delay.ts";
import type { SimulatedEvent } from "../sandbox/stripe.ts";
import { SANDBOX_SECRETS, SANDBOX_USER } from "../sandbox/index.ts";
import {
  checkoutCompleted,
  delivery,
  type StripeEvent,
  stripeId,
  subscriptionEvent,
} from "../../tests/functions/payment-webhook/stripe_events.ts";
import { Rng } from "./prng.ts";
import { type Answer, call, type World } from "./world.ts";

export interface User {
  id: string;
  token: string;
}

/** An order request (one Idempotency-Key) and every answer it got. */
export interface OrderEntry {
  key: string;
  user: User;
  body: string;
  answers: number[];
  clientOrderId?: string;
  orderId?: string;
  /** Distinct order ids seen in 201/202 answers (must be one). */
  ids: Set<string>;
  cancels: number[];
}

/** A Stripe event: delivered (answers) or withheld (never delivered: only catch-up finds it). */
export interface EventEntry {
  event: StripeEvent;
  userId: string;
  withheld: boolean;
  answers: number[];
  /** For subscription events: the subscription and the status the event carries. */
  subscription?: string;
  status?: string;
}

export interface AlertEntry {
  n: number;
  severity: string;
  title: string;
  dedupKey?: string;
  status: number;
  id?: string;
  coalesced?: boolean;
}

export interface Ledger {
  users: User[];
  operator: string;
  orders: Map<string, OrderEntry>;
  events: Map<string, EventEntry>;
  alerts: AlertEntry[];
  /** Quotes answered 200 whose price is not the provider's (made-up or wrong). */
  badQuotes: string[];
  counter: number;
  lastAlertAt: number;
}

/** The least time between two alerts of the run (see the `alert` load kind). */
const ALERT_SPACING_MS = 400;

export async function newLedger(w: World, users = 4): Promise<Ledger> {
  const out: User[] = [];
  const ids = new Rng(w.seed).fork("users");
  for (let i = 0; i < users; i++) {
    const id = `00000000-0000-4000-8000-${ids.int(0, 0xffffff).toString(16).padStart(6, "0")}${
      String(i).padStart(6, "0")
    }`;
    out.push({
      id,
      // As hosted Supabase signs a user's token: its issuer is the project's Auth.
      token: await w.sandbox.signingKey.sign({
        sub: id,
        role: "authenticated",
        aud: "authenticated",
        iss: `${w.env.SUPABASE_URL}/auth/v1`,
      }),
    });
  }
  return {
    users: out,
    operator: w.serviceKey,
    orders: new Map(),
    events: new Map(),
    alerts: [],
    badQuotes: [],
    counter: 0,
    lastAlertAt: -Infinity,
  };
}

export interface LoadKind {
  name: string;
  weight: number;
  available?(w: World): boolean;
  run(w: World, l: Ledger, rng: Rng): Promise<void>;
}

const SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"];

const json = (token: string, body: unknown, extra: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...extra },
  body: typeof body === "string" ? body : JSON.stringify(body),
});

/** Sends (or re-sends) an order with its key and body, recording what came back. */
export async function sendOrder(w: World, entry: OrderEntry, pick: number): Promise<Answer> {
  const res = await call(w, "order", "broker-order", {
    ...json(entry.user.token, entry.body, { "idempotency-key": entry.key }),
    pick,
  });
  entry.answers.push(res.status);
  if (res.status === 201 || res.status === 202) {
    const order = res.json<{ id?: string; clientOrderId?: string }>();
    if (order?.id) {
      entry.ids.add(order.id);
      entry.orderId = order.id;
    }
    if (order?.clientOrderId) entry.clientOrderId = order.clientOrderId;
  }
  return res;
}

/** Every event exists at Stripe (GET /v1/events), delivered or not: recorded by its simulator. */
async function publish(w: World, event: StripeEvent) {
  await w.sims.stripe.emit(event as unknown as SimulatedEvent, { deliver: false });
}

/** Delivers (or re-delivers) an event as Stripe does, recording the answer. */
export async function deliver(w: World, entry: EventEntry, pick: number): Promise<Answer> {
  const res = await call(w, "webhook", "payment-webhook", {
    ...await delivery(entry.event, SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET),
    pick,
  });
  entry.answers.push(res.status);
  return res;
}

const acked = (e: EventEntry) => e.answers.some((s) => s >= 200 && s < 300);

/** Every client request the run makes. */
export const LOAD_KINDS: readonly LoadKind[] = [
  {
    name: "order-new",
    weight: 4,
    run: async (w, l, rng) => {
      const type = rng.pick(["market", "market", "limit"]);
      const body: Record<string, unknown> = {
        symbol: rng.pick(SYMBOLS),
        side: rng.pick(["buy", "sell"]),
        type,
        qty: rng.int(1, 5),
        time_in_force: "day",
      };
      if (type === "limit") body.limit_price = rng.int(10, 500);
      const entry: OrderEntry = {
        key: `chaos-${w.seed}-${++l.counter}-${rng.id(6)}`,
        user: rng.pick(l.users),
        body: JSON.stringify(body),
        answers: [],
        ids: new Set(),
        cancels: [],
      };
      l.orders.set(entry.key, entry);
      await sendOrder(w, entry, rng.int(0, 1));
    },
  },
  {
    name: "order-replay",
    weight: 2,
    run: async (w, l, rng) => {
      const keys = [...l.orders.keys()];
      if (keys.length) await sendOrder(w, l.orders.get(rng.pick(keys))!, rng.int(0, 1));
    },
  },
  {
    name: "order-cancel",
    weight: 1,
    available: (w) => w.features.orderById,
    run: async (w, l, rng) => {
      const placed = [...l.orders.values()].filter((o) => o.orderId);
      if (!placed.length) return;
      const o = rng.pick(placed);
      const res = await call(w, "order-cancel", `broker-order/${o.orderId}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${o.user.token}` },
        pick: rng.int(0, 1),
      });
      o.cancels.push(res.status);
    },
  },
  {
    name: "webhook-checkout",
    weight: 3,
    run: async (w, l, rng) => {
      const userId = crypto.randomUUID();
      const event = checkoutCompleted({ userId });
      // Never delivered (endpoint down past Stripe's retries): only the catch-up applies it.
      const withheld = w.features.catchUp && w.features.stripeSim && rng.chance(0.15);
      const entry: EventEntry = { event, userId, withheld, answers: [] };
      l.events.set(event.id, entry);
      await publish(w, event);
      if (!withheld) await deliver(w, entry, rng.int(0, 1));
    },
  },
  {
    name: "webhook-duplicate",
    weight: 1,
    run: async (w, l, rng) => {
      const done = [...l.events.values()].filter(acked);
      if (done.length) await deliver(w, rng.pick(done), rng.int(0, 1));
    },
  },
  {
    name: "webhook-subscription-out-of-order",
    weight: 1,
    // One subscription's created/updated/updated, in a shuffled order: the newest must win.
    run: async (w, l, rng) => {
      const userId = crypto.randomUUID();
      const subscription = stripeId("sub");
      const customer = stripeId("cus");
      const t0 = Math.floor(Date.now() / 1000) - 120;
      const steps = [
        ["created", "incomplete"],
        ["updated", "active"],
        ["updated", rng.pick(["past_due", "active", "canceled"])],
      ] as const;
      const entries = steps.map(([type, status], i): EventEntry => {
        const event = subscriptionEvent(type, {
          subscription,
          customer,
          status,
          periodEnd: t0 + 30 * 86400,
          userId,
          created: t0 + i * 10,
        });
        return { event, userId, withheld: false, answers: [], subscription, status };
      });
      for (const e of entries) {
        l.events.set(e.event.id, e);
        await publish(w, e.event);
      }
      const order = [...entries];
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.int(0, i);
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (const e of order) await deliver(w, e, rng.int(0, 1));
    },
  },
  {
    name: "alert",
    weight: 2,
    run: async (w, l, rng) => {
      // At most one alert per ALERT_SPACING_MS over all loops: Discord takes about 2.5 messages
      // a second, and a queue longer than what it drains in the settle phase proves nothing.
      if (w.now() - l.lastAlertAt < ALERT_SPACING_MS) return;
      l.lastAlertAt = w.now();
      const n = ++l.counter;
      const severity = rng.weighted([["info", 5], ["warning", 3], ["critical", 2]] as const);
      const dedupKey = rng.chance(0.4) ? `chaos-${w.seed}-k${rng.int(0, 2)}` : undefined;
      const title = `chaos ${w.seed} a${n}`;
      const entry: AlertEntry = { n, severity, title, dedupKey, status: 0 };
      l.alerts.push(entry);
      const res = await call(w, "alert", "discord-alert", {
        ...json(l.operator, { severity, title, message: `alert ${n} of the chaos run`, dedupKey }),
        pick: rng.int(0, 1),
      });
      entry.status = res.status;
      if (res.status === 202) {
        const body = res.json<{ id: string; coalesced: boolean }>();
        entry.id = body?.id;
        entry.coalesced = body?.coalesced;
      }
    },
  },
  {
    name: "quotes",
    weight: 3,
    run: async (w, l, rng) => {
      const symbols = [rng.pick(SYMBOLS), rng.pick(SYMBOLS)];
      const res = await call(w, "quotes", `market-data?symbols=${symbols.join(",")}`, {
        headers: { authorization: `Bearer ${rng.pick(l.users).token}` },
        pick: rng.int(0, 1),
      });
      if (res.status !== 200) return;
      const quotes = res.json<{ quotes: Record<string, { bid: number }> }>()?.quotes ?? {};
      for (const s of symbols) {
        const q = quotes[s];
        if (!q || Number(q.bid) !== w.sims.quotes.priceOf(s)) {
          l.badQuotes.push(`${s}: ${JSON.stringify(q)} (provider ${w.sims.quotes.priceOf(s)})`);
        }
      }
    },
  },
  {
    name: "login",
    weight: 1,
    run: async (w, _l, rng) => {
      const right = rng.chance(0.7);
      await call(w, "login", "auth/login", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          email: SANDBOX_USER.email,
          password: right ? SANDBOX_USER.password : "not-the-password",
        }),
        pick: rng.int(0, 1),
      });
    },
  },
  {
    name: "tools",
    weight: 1,
    run: async (w, l, rng) => {
      const token = rng.pick(l.users).token;
      if (rng.chance(0.3)) {
        await call(w, "tools", "tools", {
          headers: { authorization: `Bearer ${token}` },
          pick: rng.int(0, 1),
        });
        return;
      }
      await call(w, "tools", "tools/execute", {
        ...json(token, {
          tool: "options.greeks",
          params: {
            type: rng.pick(["call", "put"]),
            spot: rng.int(50, 150),
            strike: 100,
            volatility: 0.2,
            rate: 0.03,
            timeToExpiryYears: 0.5,
          },
        }),
        pick: rng.int(0, 1),
      });
    },
  },
  {
    name: "status",
    weight: 1,
    run: async (w, _l, rng) => {
      await call(w, "status", "status", { pick: rng.int(0, 1) });
    },
  },
];

/** What each op may answer (anything else is reported); 0 is no answer (kill, abort). */
export const EXPECTED: Record<string, readonly number[]> = {
  order: [201, 202, 409, 429, 503],
  "order-cancel": [200, 409, 429, 503],
  webhook: [200, 503],
  alert: [202, 503],
  quotes: [200, 503],
  login: [200, 401, 429, 503],
  tools: [200, 503],
  status: [200, 503],
  scheduler: [200, 503],
  probe: [200, 503],
  catchup: [200, 503],
};

/** Runs `loops` client loops until `stop()`; each draws its kind and pace from its own stream. */
export function startLoad(
  w: World,
  l: Ledger,
  rng: Rng,
  loops = 4,
): { stop(): Promise<void> } {
  const kinds = LOAD_KINDS.filter((k) => k.available?.(w) ?? true);
  let stopping = false;
  const running = Array.from({ length: loops }, async (_, i) => {
    const r = rng.fork(`loop-${i}`);
    while (!stopping) {
      const kind = r.weighted(kinds.map((k) => [k, k.weight] as const));
      try {
        await kind.run(w, l, r);
      } catch (err) {
        w.history.push({
          t: w.now(),
          op: kind.name,
          inst: "-",
          status: 0,
          ms: 0,
          error: `harness: ${err instanceof Error ? err.message : String(err)}`,
        });
      }
      await delay(r.int(10, 80));
    }
  });
  return {
    async stop() {
      stopping = true;
      await Promise.all(running);
    },
  };
}

export { acked };
