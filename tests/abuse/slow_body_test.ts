/**
 * Slow bodies never take everyone's capacity (issue 12, finding 1), and a client hanging up
 * mid-body is not an unhandled error (finding 6): through the real server, over real sockets.
 */
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { startStack } from "../support/stack.ts";
import { checkoutCompleted, delivery } from "../functions/payment_webhook/stripe_events.ts";

const SLOW = 300;
const DEADLINE_MS = 3_000;

/** Headers announcing 1,000 bytes, then one byte, then nothing. */
async function slowSender(port: number, path: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: 1000\r\n\r\n{`,
  ));
  return conn;
}

/** Everything the server sends until it closes the connection (bounded by `ms`). */
async function readUntilClosed(conn: Deno.TcpConn, ms: number): Promise<string> {
  const chunks: string[] = [];
  const buf = new Uint8Array(4096);
  const decoder = new TextDecoder();
  const timer = setTimeout(() => conn.close(), ms);
  try {
    while (true) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      chunks.push(decoder.decode(buf.subarray(0, n)));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  return chunks.join("");
}

Deno.test("300 slow senders on one instance: a webhook and an order from others get their normal answers, and the slow connections are closed by the body deadline", async () => {
  const stack = await startStack({ env: { BODY_READ_TIMEOUT_MS: String(DEADLINE_MS) } });
  const conns: Deno.TcpConn[] = [];
  try {
    const started = performance.now();
    for (let i = 0; i < SLOW; i++) {
      conns.push(
        await slowSender(
          stack.server.port,
          i % 2 ? "/functions/v1/payment-webhook" : "/functions/v1/broker-order",
        ),
      );
    }
    const webhook = await stack.server.call(
      "payment-webhook",
      await delivery(checkoutCompleted(), SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET),
    );
    assertEquals(webhook.status, 200, await webhook.clone().text());
    await webhook.body?.cancel();
    const order = await stack.server.call("broker-order", {
      method: "POST",
      headers: {
        authorization: `Bearer ${await stack.userToken()}`,
        "content-type": "application/json",
        "idempotency-key": `slow-${crypto.randomUUID()}`,
      },
      body: JSON.stringify({
        symbol: "AAPL",
        side: "buy",
        type: "market",
        qty: 1,
        time_in_force: "day",
      }),
    });
    assertEquals(order.status, 201, await order.clone().text());
    await order.body?.cancel();
    assert(performance.now() - started < DEADLINE_MS, "both answered while the slow ones waited");

    const answers = await Promise.all(conns.map((c) => readUntilClosed(c, DEADLINE_MS + 5_000)));
    // Webhooks read their body (the signature needs it): 408. Orders without credentials are
    // refused before their body is read (issue 25, finding 1): 401 at once.
    const timedOut = answers.filter((a, i) => i % 2 && a.startsWith("HTTP/1.1 408")).length;
    const refused = answers.filter((a, i) => !(i % 2) && a.startsWith("HTTP/1.1 401")).length;
    assertEquals(timedOut, SLOW / 2, "every slow webhook got 408");
    assertEquals(refused, SLOW / 2, "every order without credentials got 401 without its body");
    for (const a of answers) assert(/connection: close/i.test(a), "each says connection: close");
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await stack.close();
  }
});

Deno.test("a client hanging up mid-body is logged as a request, not as an unhandled error", async () => {
  const stack = await startStack();
  try {
    for (let i = 0; i < 5; i++) {
      const conn = await slowSender(stack.server.port, "/functions/v1/payment-webhook");
      conn.close();
    }
    await new Promise((r) => setTimeout(r, 300));
    const logs = stack.server.logs.join("\n");
    assert(logs.includes('"status":400'), "each aborted request is in the access log as a 400");
    assert(!logs.includes("unhandled error"), "no unhandled error for an aborted body");
    assert(!logs.includes('"status":500'), "no 500 for an aborted body");
  } finally {
    await stack.close();
  }
});
