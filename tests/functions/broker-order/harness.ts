/**
 * What the broker-order tests share: a fresh database, the simulated Alpaca on loopback, the
 * function's environment, and a caller that speaks the function's protocol.
 */
import { type BrokerSimulator, startBrokerSimulator } from "../../../local/sandbox/broker.ts";
import { freshDatabase, type TestDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv, userToken } from "../../support/env.ts";

export const BROKER_KEY_ID = "test-broker-key-id";
export const BROKER_SECRET = "test-broker-secret-key";

/** A valid market order. */
export const MARKET = { symbol: "AAPL", side: "buy", type: "market", qty: 1, time_in_force: "day" };

export interface World {
  db: TestDatabase;
  broker: BrokerSimulator;
  /** The function's environment, plus `extra`. */
  env(extra?: Record<string, string>): Record<string, string>;
}

/** Runs `fn` with a fresh database and a broker simulator, closing both after. */
export async function withWorld(fn: (w: World) => Promise<void>): Promise<void> {
  const db = await freshDatabase({ migrated: true });
  const broker = await startBrokerSimulator({ keyId: BROKER_KEY_ID, secretKey: BROKER_SECRET });
  try {
    await fn({
      db,
      broker,
      env: (extra = {}) =>
        testEnv(db.url, {
          BROKER_API_URL: broker.url,
          BROKER_API_KEY_ID: BROKER_KEY_ID,
          BROKER_API_SECRET_KEY: BROKER_SECRET,
          ...extra,
        }),
    });
  } finally {
    await broker.close();
    await db.close();
  }
}

type Call = (path: string, init?: RequestInit) => Promise<Response>;

export interface Trader {
  id: string;
  token: string;
  /** `POST` an order (any body) with an Idempotency-Key (null: none). */
  order(body: unknown, key?: string | null, headers?: Record<string, string>): Promise<Response>;
  /** `GET` the trader's orders (`query` without `?`). */
  list(query?: string): Promise<Response>;
  /** `GET` one order. */
  one(id: string): Promise<Response>;
  /** `DELETE` (cancel) one order. */
  cancel(id: string): Promise<Response>;
}

/** A user of the function on a server. */
export async function trader(call: Call, id: string = crypto.randomUUID()): Promise<Trader> {
  const token = await userToken(id);
  return {
    id,
    token,
    order: (body, key = crypto.randomUUID(), headers = {}) =>
      call("broker-order", {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          origin: FRONTEND,
          ...(key === null ? {} : { "idempotency-key": key }),
          ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    list: (query = "") =>
      call(`broker-order${query ? `?${query}` : ""}`, {
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      }),
    one: (id) =>
      call(`broker-order/${id}`, {
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      }),
    cancel: (id) =>
      call(`broker-order/${id}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${token}`, origin: FRONTEND },
      }),
  };
}

/** Polls `check` until it is true or `ms` pass. */
export async function until(check: () => boolean, ms = 10_000, what = "condition") {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > ms) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
