/**
 * payment-webhook's front door: Stripe-Signature verification on the raw body, secret
 * rotation, method, size, no CORS, and boot-time validation of its configuration.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { freshDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv } from "../../support/env.ts";
import { startTestServer } from "../../support/server.ts";
import { checkoutCompleted, delivery, OTHER_SECRET, SECRET, STRIPE_KEY } from "./stripe_events.ts";
import { purchases, storedEvents, withWebhook } from "./support.ts";

const PATH = "payment-webhook";

async function expectInvalidSignature(res: Response) {
  const body = await res.json();
  assertEquals(res.status, 400);
  assertEquals(body.error.code, "INVALID_SIGNATURE");
  assert(res.headers.get("x-request-id"));
}

Deno.test("payment-webhook answers 400 INVALID_SIGNATURE to missing, forged, stale, tampered and wrong-secret deliveries and records nothing", async () => {
  await withWebhook(async (server) => {
    const event = checkoutCompleted();
    const good = await delivery(event);
    const headers = good.headers as Record<string, string>;

    // Missing header.
    const { "stripe-signature": _, ...unsigned } = headers;
    await expectInvalidSignature(
      await server.call(PATH, { method: "POST", headers: unsigned, body: good.body }),
    );
    // Forged: a well-formed header whose v1 signature was not made with our secret.
    const t = Math.floor(Date.now() / 1000);
    const forged = `t=${t},v1=${"ab".repeat(32)}`;
    await expectInvalidSignature(
      await server.call(PATH, { ...good, headers: { ...headers, "stripe-signature": forged } }),
    );
    // Stale: correctly signed, 301 s ago (tolerance 300 s).
    await expectInvalidSignature(
      await server.call(PATH, await delivery(event, SECRET, { timestamp: t - 301 })),
    );
    // Tampered: the signed body with the amount changed.
    const tampered = String(good.body).replace('"amount_total": 4900', '"amount_total": 1');
    assert(tampered !== good.body);
    await expectInvalidSignature(await server.call(PATH, { ...good, body: tampered }));
    // Signed with a secret we do not have.
    await expectInvalidSignature(await server.call(PATH, await delivery(event, OTHER_SECRET)));

    assertEquals(await storedEvents(server.platform.db), []);
    assertEquals(await purchases(server.platform.db), []);

    // The same event, correctly signed, goes through: the rejections above were the signature's.
    const ok = await server.call(PATH, await delivery(event));
    assertEquals(await ok.json(), { received: true });
    assertEquals((await purchases(server.platform.db)).length, 1);
  });
});

Deno.test("payment-webhook accepts either secret of a comma-separated list while a secret is rotated", async () => {
  await withWebhook(async (server) => {
    const a = checkoutCompleted();
    const b = checkoutCompleted();
    const resA = await server.call(PATH, await delivery(a, SECRET));
    const resB = await server.call(PATH, await delivery(b, OTHER_SECRET));
    assertEquals([resA.status, resB.status], [200, 200]);
    await resA.body?.cancel();
    await resB.body?.cancel();
    const ids = (await storedEvents(server.platform.db)).map((e) => e.id).sort();
    assertEquals(ids, [a.id, b.id].sort());
    // A third secret is still refused.
    await expectInvalidSignature(
      await server.call(PATH, await delivery(checkoutCompleted(), "whsec_neither_of_the_two")),
    );
  }, { STRIPE_WEBHOOK_SECRET: `${SECRET}, ${OTHER_SECRET}` });
});

Deno.test("payment-webhook answers 400 MALFORMED_EVENT to a correctly signed body that is not an event, recording nothing", async () => {
  await withWebhook(async (server) => {
    const notJson = await server.call(PATH, await delivery(null, SECRET, { body: "{not json" }));
    assertEquals(notJson.status, 400);
    assertEquals((await notJson.json()).error.code, "MALFORMED_EVENT");
    const noId = await server.call(PATH, await delivery({ type: "charge.refunded" }));
    assertEquals(noId.status, 400);
    assertEquals((await noId.json()).error.code, "MALFORMED_EVENT");
    assertEquals(await storedEvents(server.platform.db), []);
  });
});

Deno.test("payment-webhook answers 405 with Allow: POST to other methods, 413 past the body limit, and no CORS headers", async () => {
  await withWebhook(async (server) => {
    const get = await server.call(PATH);
    assertEquals(get.status, 405);
    assertEquals(get.headers.get("allow"), "POST");
    await get.body?.cancel();

    const big = checkoutCompleted();
    (big.data.object as Record<string, unknown>).padding = "x".repeat(3000);
    const tooLarge = await server.call(PATH, await delivery(big));
    assertEquals(tooLarge.status, 413);
    assertEquals((await tooLarge.json()).error.code, "PAYLOAD_TOO_LARGE");

    const preflight = await server.call(PATH, {
      method: "OPTIONS",
      headers: { origin: FRONTEND, "access-control-request-method": "POST" },
    });
    await preflight.body?.cancel();
    assertEquals(preflight.headers.get("access-control-allow-origin"), null);
    const fromBrowser = await server.call(PATH, {
      ...await delivery(checkoutCompleted()),
      headers: {
        ...(await delivery(checkoutCompleted())).headers as Record<string, string>,
        origin: FRONTEND,
      },
    });
    await fromBrowser.body?.cancel();
    assertEquals(fromBrowser.headers.get("access-control-allow-origin"), null);
    assertEquals(await storedEvents(server.platform.db).then((e) => e.length), 0);
  }, { WEBHOOK_BODY_LIMIT_BYTES: "2048" });
});

Deno.test("payment-webhook does not boot without a Stripe key and whsec_ signing secrets, naming each variable", async () => {
  const db = await freshDatabase({ migrated: true });
  try {
    const server = await startTestServer(
      testEnv(db.url, { STRIPE_WEBHOOK_SECRET: `${SECRET},not-a-whsec-secret` }),
      { only: ["payment-webhook"] },
    );
    try {
      const res = await server.call(PATH, await delivery(checkoutCompleted()));
      const body = await res.json();
      assertEquals(res.status, 503);
      assertEquals(body.error.code, "BOOT_ERROR");
      assertStringIncludes(body.error.message, "STRIPE_SECRET_KEY is missing");
      assertStringIncludes(body.error.message, "STRIPE_WEBHOOK_SECRET must be whsec_ secrets");
      assert(!body.error.message.includes(SECRET), "the secret's value is never shown");
      assert(!body.error.message.includes(STRIPE_KEY));
    } finally {
      await server.close();
    }
  } finally {
    await db.close();
  }
});
