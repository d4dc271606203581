/**
 * The instance's body budget through the real server (issue 25, finding 1): bodies held by slow
 * senders count against one budget shared by every function; past it a new body is refused 503
 * with Retry-After, while requests without a body are served; the budget comes back.
 */
import { assert, assertEquals } from "@std/assert";
import { startStack } from "../support/stack.ts";

/** A webhook delivery announcing `bytes` with a current, well-formed header, then one byte. */
async function slowWebhook(port: number, bytes: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t = Math.floor(Date.now() / 1000);
  await conn.write(new TextEncoder().encode(
    `POST /functions/v1/payment-webhook HTTP/1.1\r\nhost: 127.0.0.1\r\n` +
      `content-type: application/json\r\ncontent-length: ${bytes}\r\n` +
      `stripe-signature: t=${t},v1=${"0".repeat(64)}\r\n\r\n{`,
  ));
  return conn;
}

Deno.test("bodies past BODY_BUFFER_BUDGET_BYTES are refused 503 BODY_BUDGET_EXHAUSTED in every function; bodiless requests are served; the budget comes back", async () => {
  const stack = await startStack({
    env: { BODY_BUFFER_BUDGET_BYTES: "4000", BODY_READ_TIMEOUT_MS: "1500" },
  });
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 4; i++) conns.push(await slowWebhook(stack.server.port, 1000));
    await new Promise((r) => setTimeout(r, 200)); // all four hold 1,000 bytes each
    const t = Math.floor(Date.now() / 1000);
    const webhook = await stack.server.call("payment-webhook", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": `t=${t},v1=00` },
      body: "x".repeat(100),
    });
    assertEquals(webhook.status, 503);
    assertEquals((await webhook.json()).error.code, "BODY_BUDGET_EXHAUSTED");
    assertEquals(webhook.headers.get("retry-after"), "1");
    const alert = await stack.server.call("discord-alert", {
      method: "POST",
      headers: {
        authorization: `Bearer ${await stack.serviceToken()}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ severity: "info", title: "t", message: "m" }),
    });
    assertEquals(alert.status, 503, "another function shares the budget");
    await alert.body?.cancel();
    const status = await stack.server.call("status");
    assertEquals(status.status, 200, "a request without a body is served");
    await status.body?.cancel();

    // The slow ones time out (408) and give their bytes back.
    for (const conn of conns) {
      const buf = new Uint8Array(1024);
      const n = await conn.read(buf);
      assert(new TextDecoder().decode(buf.subarray(0, n ?? 0)).startsWith("HTTP/1.1 408"));
    }
    const after = await stack.server.call("discord-alert", {
      method: "POST",
      headers: {
        authorization: `Bearer ${await stack.serviceToken()}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ severity: "info", title: "t", message: "m" }),
    });
    assertEquals(after.status, 202, await after.clone().text());
    await after.body?.cancel();
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await stack.close();
  }
});
