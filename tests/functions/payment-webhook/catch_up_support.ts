/**
 * Setup of the catch-up tests: a fresh database, the Stripe simulator (local/sandbox/stripe.ts)
 * delivering to the real server in this process, and reads of the catch-up's state.
 */
import postgres from "postgres";
import { startStripeSimulator, type StripeSimulator } from "../../../local/sandbox/stripe.ts";
import { freshDatabase, type TestDatabase } from "../../support/db.ts";
import { serviceToken, testEnv } from "../../support/env.ts";
import { startTestServer, type TestServer } from "../../support/server.ts";
import { SECRET, STRIPE_KEY, webhookEnv } from "./stripe_events.ts";

export interface CatchUpWorld {
  server: TestServer;
  sim: StripeSimulator;
  db: TestDatabase;
  /** `POST payment-webhook/catch-up` as the scheduler calls it; status and parsed body. */
  run(server?: { call: TestServer["call"] }): Promise<RunAnswer>;
  /** The catch-up's stored state, the recorded events, purchases and subscriptions. */
  state(): Promise<StoredState>;
}

export interface RunAnswer {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

export interface StoredState {
  cursor: { covered_until: Date | null; scan_after: string | null; version: string } | null;
  events: { id: string; outcome: string; via: string | null }[];
  purchases: number;
  subscriptions: { stripe_subscription_id: string; status: string }[];
}

/** Runs `fn` with a simulator and a server on a fresh database; closes everything afterwards. */
export async function withCatchUp(
  fn: (w: CatchUpWorld) => Promise<void>,
  opts: {
    extra?: Record<string, string>;
    /** STRIPE_API_URL from the simulator's URL (e.g. a fault proxy in front of it). */
    stripeUrl?: (simUrl: string) => Promise<string>;
  } = {},
): Promise<void> {
  const db = await freshDatabase({ migrated: true });
  const sim = await startStripeSimulator({ secretKey: STRIPE_KEY, webhookSecret: SECRET });
  try {
    const env = testEnv(db.url, {
      ...webhookEnv(),
      STRIPE_API_URL: opts.stripeUrl ? await opts.stripeUrl(sim.url) : sim.url,
      STRIPE_TIMEOUT_MS: "1000",
      ...opts.extra,
    });
    const server = await startTestServer(env, { only: ["payment-webhook", "status"] });
    sim.webhookUrl = `${server.url}/functions/v1/payment-webhook`;
    const token = await serviceToken();
    try {
      await fn({
        server,
        sim,
        db,
        run: (via = server) => catchUp(via, token),
        state: () => storedState(server),
      });
    } finally {
      await server.close();
    }
  } finally {
    await sim.close();
    await db.close();
  }
}

/** One catch-up run through `server`. */
export async function catchUp(
  server: { call: TestServer["call"] },
  token: string,
): Promise<RunAnswer> {
  const res = await server.call("payment-webhook/catch-up", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** What the catch-up and the webhook stored (through the server's pool or a URL). */
export async function storedState(source: TestServer | string): Promise<StoredState> {
  const read = async (sql: postgres.Sql) => {
    const [cursor] = await sql`
      select covered_until, scan_after, version::text from internal.stripe_catch_up`;
    const events = await sql`select id, outcome, via from internal.stripe_events order by id`;
    const [{ n }] = await sql`select count(*)::int as n from public.purchases`;
    const subscriptions = await sql`
      select stripe_subscription_id, status from public.subscriptions
      order by stripe_subscription_id`;
    return {
      cursor: (cursor ?? null) as StoredState["cursor"],
      events: [...events] as unknown as StoredState["events"],
      purchases: n as number,
      subscriptions: [...subscriptions] as unknown as StoredState["subscriptions"],
    };
  };
  if (typeof source === "string") {
    const sql = postgres(source, { max: 1, onnotice: () => {} });
    try {
      return await read(sql);
    } finally {
      await sql.end();
    }
  }
  return await source.platform.db.query(read);
}
