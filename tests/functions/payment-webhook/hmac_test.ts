/**
 * stripeHmac(): the same digests as Stripe's Web Crypto provider, and Stripe's own verification
 * accepts, refuses and dates deliveries with it exactly as with that provider.
 */
import { assertEquals } from "@std/assert";
import Stripe from "stripe";
import { stripeHmac } from "../../../functions/payment-webhook/hmac.ts";
import { checkoutCompleted, delivery, OTHER_SECRET, SECRET } from "./stripe_events.ts";

const subtle = Stripe.createSubtleCryptoProvider();

Deno.test("stripeHmac() computes the digests of Stripe's Web Crypto provider", async () => {
  const fast = stripeHmac();
  // Stripe's documented sample values, then a multi-byte payload and a real-sized one.
  const cases: [string, string][] = [
    ["", "test_secret"],
    ["\ud83d\ude00", "test_secret"],
    ['1733100000.{"note":"é — ü"}', SECRET],
    [`1733100000.${JSON.stringify(checkoutCompleted(), null, 2)}`, OTHER_SECRET],
  ];
  for (const [payload, secret] of cases) {
    const expected = await subtle.computeHMACSignatureAsync(payload, secret);
    assertEquals(await fast.computeHMACSignatureAsync(payload, secret), expected);
    assertEquals(fast.computeHMACSignature(payload, secret), expected, "sync, once loaded");
  }
  assertEquals(
    await subtle.computeHMACSignatureAsync("", "test_secret"),
    "f7f9bd47fb987337b5796fdc1fdb9ba221d0d5396814bfcaf9521f43fd8927fd",
  );
  const data = new TextEncoder().encode("abc");
  assertEquals([...await fast.computeSHA256Async(data)], [
    ...await subtle.computeSHA256Async(data),
  ]);
});

Deno.test("Stripe's constructEventAsync with stripeHmac() accepts what Web Crypto accepts and refuses what it refuses", async () => {
  const event = checkoutCompleted();
  const good = await delivery(event);
  const header = (good.headers as Record<string, string>)["stripe-signature"];
  const body = new TextEncoder().encode(good.body as string);
  const verify = (provider: Stripe.CryptoProvider, secret: string, payload = body) =>
    Stripe.webhooks.constructEventAsync(payload, header, secret, 300, provider)
      .then((e) => (e as { id: string }).id, (err) => (err as Error).constructor.name);
  const tampered = new TextEncoder().encode((good.body as string).replace("usd", "eur"));
  for (
    const [secret, payload] of [[SECRET, body], [OTHER_SECRET, body], [SECRET, tampered]] as const
  ) {
    assertEquals(
      await verify(stripeHmac(), secret, payload),
      await verify(subtle, secret, payload),
    );
  }
  assertEquals(await verify(stripeHmac(), SECRET), (event as { id: string }).id);
});
