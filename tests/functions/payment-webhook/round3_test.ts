/**
 * payment-webhook under issue 25: text cut inside a surrogate pair (finding 7: the ignored
 * event's type and reason are cut to their columns and must stay valid text, never a 500), and a
 * checkout whose amount_total is negative (recorded as ignored, not applied as a purchase).
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { checkoutCompleted, delivery, envelope, SECRET } from "./stripe_events.ts";
import { purchases, storedEvents, withWebhook } from "./support.ts";

const PATH = "payment-webhook";
const EMOJI = "\u{1F600}"; // two UTF-16 units

Deno.test("an ignored event whose type or reason is cut inside an emoji is recorded and acknowledged, never a 500", async () => {
  await withWebhook(async (server) => {
    // The type column keeps 255 units, the reason 500 ("unhandled event type " is 21 units):
    // each type puts an emoji's two halves on both sides of one of the cuts.
    const types = [
      "a".repeat(254) + EMOJI, // the type's cut
      "b".repeat(478) + EMOJI + "c", // the reason's cut
      "d".repeat(477) + EMOJI + EMOJI, // the reason's cut, after a whole pair
      EMOJI.repeat(300), // pairs all the way
    ];
    for (const type of types) {
      const res = await server.call(PATH, await delivery(envelope(type, { id: "x_1" })));
      assertEquals(res.status, 200, `${type.length} units: ${await res.clone().text()}`);
      assertEquals(await res.json(), { received: true });
    }
    const events = await storedEvents(server.platform.db);
    assertEquals(events.length, types.length);
    for (const e of events) {
      assertEquals(e.outcome, "ignored");
      assertEquals(e.type, e.type.toWellFormed(), "the stored type is well formed");
      assertEquals(e.reason, e.reason!.toWellFormed(), "the stored reason is well formed");
      assert(e.type.length <= 255 && e.reason!.length <= 500);
    }
  });
});

Deno.test("a checkout whose amount_total is negative is recorded as ignored, not applied as a purchase", async () => {
  await withWebhook(async (server) => {
    for (const amountTotal of [-1, -500, -2_147_483_648]) {
      const res = await server.call(PATH, await delivery(checkoutCompleted({ amountTotal })));
      assertEquals(await res.json(), { received: true });
    }
    assertEquals(await purchases(server.platform.db), []);
    for (const e of await storedEvents(server.platform.db)) {
      assertEquals(e.outcome, "ignored");
      assertMatch(e.reason ?? "", /amount_total/);
    }
    const zero = await server.call(PATH, await delivery(checkoutCompleted({ amountTotal: 0 })));
    assertEquals(await zero.json(), { received: true });
    assertEquals((await purchases(server.platform.db)).length, 1, "a free checkout still counts");
  });
});

Deno.test("a Stripe-Signature that Stripe reads as signed an hour ahead is refused, however the timestamp is spelled", async () => {
  const Stripe = (await import("stripe")).default;
  const crypto = Stripe.createSubtleCryptoProvider();
  const future = Math.floor(Date.now() / 1000) + 3600;
  const payload = JSON.stringify(checkoutCompleted());
  const signed = await Stripe.webhooks.generateTestHeaderStringAsync({
    payload,
    secret: SECRET,
    timestamp: future,
    cryptoProvider: crypto,
  });
  const v1 = /v1=([0-9a-f]+)/.exec(signed)![1];
  const headers = [
    `t=0,t=${future},v1=${v1}`, // repeated t=: Stripe takes the last
    `t=${future},t=${future},v1=${v1}`,
    `t=${future}x,v1=${v1}`, // trailing text: parseInt stops at it
    `t=${future}.5,v1=${v1}`,
    `t=0${future},v1=${v1}`, // a leading zero
    `t=000${future},v1=${v1}`,
    `t= ${future},v1=${v1}`, // parseInt skips leading whitespace
    `t=${future}=0,v1=${v1}`, // a second "=": only the first value counts
  ];
  await withWebhook(async (server) => {
    for (const header of headers) {
      // Stripe's own check (past tolerance only) takes each as signed at `future`.
      await Stripe.webhooks.constructEventAsync(payload, header, SECRET, 300, crypto);
      const res = await server.call(PATH, {
        method: "POST",
        headers: { "content-type": "application/json", "stripe-signature": header },
        body: payload,
      });
      assertEquals(res.status, 400, header);
      assertEquals((await res.json()).error.code, "INVALID_SIGNATURE");
    }
    assertEquals(await storedEvents(server.platform.db), []);
    const now = await server.call(PATH, await delivery(checkoutCompleted()));
    assertEquals(await now.json(), { received: true }, "Stripe's own header still passes");
  });
});

Deno.test("a delivery whose Stripe-Signature is missing, malformed or out of time is refused before its body is read", async () => {
  await withWebhook(async (server) => {
    const now = Math.floor(Date.now() / 1000);
    const headers: [string, string | null][] = [
      ["missing", null],
      ["malformed", "v1=abc"],
      ["two timestamps", `t=${now},t=${now},v1=abc`],
      ["stale", `t=${now - 3600},v1=abc`],
      ["future", `t=${now + 3600},v1=abc`],
    ];
    for (const [what, header] of headers) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        // 100,000 bytes announced, one sent: the answer must come without the rest.
        const sig = header === null ? "" : `stripe-signature: ${header}\r\n`;
        await conn.write(new TextEncoder().encode(
          `POST /functions/v1/payment-webhook HTTP/1.1\r\nhost: 127.0.0.1\r\n` +
            `content-type: application/json\r\ncontent-length: 100000\r\n${sig}\r\n{`,
        ));
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf);
        const answer = new TextDecoder().decode(buf.subarray(0, n ?? 0));
        assert(answer.startsWith("HTTP/1.1 400"), `${what}: ${answer.slice(0, 40)}`);
        assert(answer.includes("INVALID_SIGNATURE"), what);
      } finally {
        conn.close();
      }
    }
    assertEquals(await storedEvents(server.platform.db), []);
  }, { BODY_READ_TIMEOUT_MS: "30000" });
});
