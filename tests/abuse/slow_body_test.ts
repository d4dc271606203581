/**
 * Slow bodies never take everyone's capacity (issue 12, finding 1), and a client hanging up
 * mid-body is not an unhandled error (finding 6): through the real server, over real sockets.
 */
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../local/sandbox/index.ts";
import { startStack } from "../support/stack.ts";
import { checkoutCompleted, delivery } from "../functions/payment-webhook/stripe_events.ts";

const SLOW = 300;
const DEADLINE_MS = 3_000;

/**
 * Headers announcing 1,000 bytes, then one byte, then nothing. A webhook's carries a
 * `Stripe-Signature` of the right form and time, so it passes the checks made before the body
 * and waits for its body (its signature can only be checked against it).
 */
async function slowSender(port: number, path: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const signature = path.endsWith("payment-webhook")
    ? `Stripe-Signature: t=${Math.floor(Date.now() / 1000)},v1=${"0".repeat(64)}\r\n`
    : "";
  await conn.write(new TextEncoder().encode(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `${signature}Content-Length: 1000\r\n\r\n{`,
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

Deno.test("300 slow senders on one instance: a webhook and an order from others, over their own sockets, get their normal answers while every slow webhook still waits; slow webhooks end with 408 at the body deadline and orders without credentials with 401 before their body, all with connection: close", async () => {
  // Capacity far below the slow senders: were they counted as work, the probes would be shed.
  const stack = await startStack({
    env: { BODY_READ_TIMEOUT_MS: String(DEADLINE_MS), MAX_IN_FLIGHT_REQUESTS: "20" },
  });
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < SLOW; i++) {
      conns.push(
        await slowSender(
          stack.server.port,
          i % 2 ? "/functions/v1/payment-webhook" : "/functions/v1/broker-order",
        ),
      );
    }
    // Each slow connection's answer is read as it comes; `answered` counts the slow webhooks'
    // (a webhook reads its body, so it waits for it; an order without credentials is refused
    // at once, before its body).
    let answered = 0;
    const reading = conns.map((c, i) =>
      readUntilClosed(c, DEADLINE_MS + 10_000).then((text) => {
        if (i % 2) answered++;
        return text;
      })
    );
    // The probes go over real sockets to the same server, as the slow senders' do.
    const url = (path: string) => `${stack.server.url}/functions/v1/${path}`;
    const webhook = await fetch(
      url("payment-webhook"),
      await delivery(checkoutCompleted(), SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET),
    );
    assertEquals(webhook.status, 200, await webhook.clone().text());
    await webhook.body?.cancel();
    const order = await fetch(url("broker-order"), {
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
    assertEquals(answered, 0, "both answered while every slow webhook sender was still waiting");

    const answers = await Promise.all(reading);
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

Deno.test("a client hanging up mid-body is logged as a 400 request, each one, and never as an unhandled error", async () => {
  const stack = await startStack();
  const HANGUPS = 5;
  try {
    for (let i = 0; i < HANGUPS; i++) {
      const conn = await slowSender(stack.server.port, "/functions/v1/payment-webhook");
      conn.close();
    }
    const aborted = () =>
      stack.server.logs.map((l) => JSON.parse(l)).filter((r) =>
        r.msg === "request" && r.fn === "payment-webhook" && r.method === "POST" &&
        r.status === 400
      ).length;
    // A bounded wait for the outcome: one access line per hang-up.
    for (let i = 0; i < 200 && aborted() < HANGUPS; i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    assertEquals(aborted(), HANGUPS, "each aborted request is in the access log as a 400");
    const logs = stack.server.logs.join("\n");
    assert(!logs.includes("unhandled error"), "no unhandled error for an aborted body");
    assert(!logs.includes('"status":500'), "no 500 for an aborted body");
  } finally {
    await stack.close();
  }
});
