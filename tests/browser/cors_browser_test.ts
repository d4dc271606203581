/**
 * CORS in a real browser: headless Chromium loads a page from an allowed origin that places an
 * order through broker-order and reads the exposed headers; the same page from another origin is
 * blocked by the browser and has no effect (no order at the broker, none in the database).
 */
import { chromium } from "playwright-core";
import postgres from "postgres";
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { startBrokerSimulator } from "../../local/sandbox/broker.ts";
import { freshDatabase } from "../support/db.ts";
import { testEnv, userToken } from "../support/env.ts";
import { startTestServer } from "../support/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

/** A page server on `hostname`; its origin is what the browser sends as `Origin`. */
function pageServer(hostname: string) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response("<!doctype html><title>app</title><p>app</p>", {
        headers: { "content-type": "text/html" },
      }),
  );
  return { origin: `http://${hostname}:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test({
  name:
    "a page from an allowed origin places an order and reads its headers; from another origin it is blocked and does nothing",
  ignore: !haveChromium, // .ci/run installs Debian's chromium; a bare machine may lack it
  async fn() {
    const db = await freshDatabase();
    const broker = await startBrokerSimulator({
      keyId: SANDBOX_SECRETS.BROKER_API_KEY_ID,
      secretKey: SANDBOX_SECRETS.BROKER_API_SECRET_KEY,
    });
    const allowed = pageServer("127.0.0.1");
    const other = pageServer("localhost");
    const server = await startTestServer(
      testEnv(db.url, {
        FRONTEND_URL: allowed.origin,
        BROKER_API_URL: broker.url,
        BROKER_API_KEY_ID: SANDBOX_SECRETS.BROKER_API_KEY_ID,
        BROKER_API_SECRET_KEY: SANDBOX_SECRETS.BROKER_API_SECRET_KEY,
      }),
      { only: ["broker-order"] },
    );
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const token = await userToken();
      const endpoint = `${server.url}/functions/v1/broker-order`;
      const placeOrder = async (origin: string, key: string) => {
        const page = await browser.newPage();
        try {
          await page.goto(origin);
          return await page.evaluate(async ({ endpoint, token, key }) => {
            try {
              const res = await fetch(endpoint, {
                method: "POST",
                headers: {
                  authorization: `Bearer ${token}`,
                  "idempotency-key": key,
                  "content-type": "application/json",
                },
                body: JSON.stringify({
                  symbol: "AAPL",
                  side: "buy",
                  type: "market",
                  qty: "1",
                  time_in_force: "day",
                }),
              });
              return {
                ok: true,
                status: res.status,
                requestId: res.headers.get("x-request-id"),
                replayed: res.headers.get("idempotent-replayed"),
                rateLimit: res.headers.get("ratelimit"),
                body: await res.json(),
              };
            } catch (err) {
              return { ok: false, error: String(err) };
            }
          }, { endpoint, token, key });
        } finally {
          await page.close();
        }
      };

      const first = await placeOrder(allowed.origin, "browser-order-0001");
      assert(first.ok, JSON.stringify(first));
      assertEquals(first.status, 201, JSON.stringify(first));
      assert(first.requestId, "the page can read x-request-id");
      assert(first.rateLimit, "the page can read the RateLimit field");
      assertEquals(broker.placed, 1);

      const replay = await placeOrder(allowed.origin, "browser-order-0001");
      assertEquals(replay.status, 201);
      assertEquals(replay.replayed, "true", "the page can read Idempotent-Replayed");

      const blocked = await placeOrder(other.origin, "browser-order-0002");
      assertEquals(blocked.ok, false, "the browser blocks the cross-origin call");
      assertEquals(broker.placed, 1, "the blocked page placed nothing at the broker");
      const [{ n }] = await sql`select count(*)::int as n from orders`;
      assertEquals(n, 1, "and nothing in the database");
    } finally {
      await sql.end();
      await browser.close();
      await server.close();
      await allowed.close();
      await other.close();
      await broker.close();
      await db.close();
    }
  },
});
