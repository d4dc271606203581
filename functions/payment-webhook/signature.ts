/**
 * The Stripe-Signature guard: verifies the header against the raw body with each configured
 * signing secret (https://docs.stripe.com/webhooks#verify-events), with the crypto provider and
 * the clock injected (Stripe's own `createWebhooks(platformFunctions)` pattern), and puts the
 * verified event in `c.var.event`. Missing, forged, tampered, signed with another secret, older
 * than the tolerance, or dated further than the tolerance in the future (Stripe's library checks
 * only the past; a future timestamp would let a captured delivery be replayed for longer):
 * `400 INVALID_SIGNATURE`. Signed but not JSON: `400 MALFORMED_EVENT`.
 *
 * Stripe's library is imported by the first delivery, not at boot (a cold isolate pays only for
 * what its first request uses); only its static webhook helpers are used, no API client.
 *
 * @example
 * ```ts
 * import type { Hono } from "hono";
 * import type { Logger } from "../../shared/logger.ts";
 * import { type SignedVars, stripeSignature } from "./signature.ts";
 *
 * declare const app: Hono<SignedVars>, log: Logger;
 * const verified = stripeSignature({
 *   secrets: ["whsec_example"],
 *   toleranceSeconds: 300,
 *   now: Date.now,
 *   log,
 * });
 * app.post("/", verified, (c) => c.json({ received: c.var.event !== undefined }));
 * ```
 */
import { createMiddleware } from "hono/factory";
import type Stripe from "stripe";
import type { AppEnv } from "../../shared/platform/app.ts";
import { BadRequest } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";

/** What the guard gives the handler: the verified event, as parsed JSON (not yet validated). */
export type SignedVars = { Variables: AppEnv["Variables"] & { event: unknown } };

export interface StripeSignatureOptions {
  /** The endpoint's signing secrets (`whsec_…`); several while one is rolled. */
  secrets: readonly string[];
  /** Largest distance in seconds between the signature's time and now, both ways (> 0). */
  toleranceSeconds: number;
  /** Stripe's crypto provider; by default Web Crypto (`Stripe.createSubtleCryptoProvider()`), as on the Edge Runtime. */
  crypto?: Stripe.CryptoProvider;
  /** The clock, in ms since the epoch. */
  now: () => number;
  log: Logger;
}

/** The guard; throws at start-up without a secret or with a tolerance that is not positive. */
export function stripeSignature(options: StripeSignatureOptions) {
  const o = { ...options, secrets: [...options.secrets] };
  if (o.secrets.length === 0) throw new Error("Stripe signature needs at least one secret");
  if (!(o.toleranceSeconds > 0)) {
    throw new Error(`Stripe signature tolerance must be positive, got ${o.toleranceSeconds}`);
  }
  let library: Promise<{ Stripe: typeof Stripe; crypto: Stripe.CryptoProvider }> | undefined;
  const load = () =>
    library ??= import("stripe").then(({ default: Stripe }) => ({
      Stripe,
      crypto: o.crypto ?? Stripe.createSubtleCryptoProvider(),
    }));

  return createMiddleware<SignedVars>(async function stripeSignature(c, next) {
    const header = checkedHeader(c.req.header("stripe-signature"), o);
    // Stripe's static webhook helpers: no API client (and no API key) is needed to verify.
    const { Stripe, crypto } = await load();
    const body = new Uint8Array(await c.req.arrayBuffer());
    const now = o.now();
    let reason = "";
    for (const secret of o.secrets) {
      let event: unknown;
      try {
        event = await Stripe.webhooks.constructEventAsync(
          body,
          header,
          secret,
          o.toleranceSeconds,
          crypto,
          now,
        );
      } catch (err) {
        if (err instanceof Stripe.errors.StripeSignatureVerificationError) {
          reason = err.message.split("\n")[0];
          continue;
        }
        // The signature matched but the body is not JSON: nothing to record it by.
        throw new BadRequest("The signed body is not a JSON event.", "MALFORMED_EVENT");
      }
      c.set("event", event);
      return await next();
    }
    o.log.warn("stripe signature rejected", { reason });
    throw invalidSignature();
  });
}

/**
 * The time the header was signed at, read as Stripe's library reads it, or undefined for a header
 * that another reader could take differently (issue 25, finding 4). stripe-node's `parseHeader`
 * (Webhooks.js) splits on `,`, then each item on `=`; an item whose key is exactly `t` sets the
 * timestamp with `parseInt(value, 10)`, the last one winning, and that number is what the HMAC
 * covers. So `t=0,t=<future>` is signed at the future time, and `t=<future>x` or `t=0<future>`
 * are too. Stripe itself sends exactly one `t=` of plain digits; anything else is refused here,
 * so this guard and Stripe's check always read the same number.
 */
export function signedTimestamp(header: string): number | undefined {
  const items = header.split(",").map((item) => item.split("=")).filter(([key]) => key === "t");
  if (items.length !== 1 || items[0].length !== 2) return undefined;
  const value = items[0][1];
  if (!/^[1-9][0-9]{0,11}$/.test(value)) return undefined;
  return parseInt(value, 10);
}

/**
 * The part of the check that needs no body, ahead of `bodyLimit` (which reads it): a missing
 * header, or one whose timestamp is not one plain `t=`, or is outside the tolerance either way,
 * is refused before a byte of the body is buffered (issue 25, finding 1). The full check
 * (`stripeSignature`) repeats it.
 */
export function stripeSignatureHeader(
  options: Pick<StripeSignatureOptions, "toleranceSeconds" | "now" | "log">,
) {
  return createMiddleware<SignedVars>(async function stripeSignatureHeader(c, next) {
    checkedHeader(c.req.header("stripe-signature"), options);
    await next();
  });
}

/** The header, if present and timed within the tolerance both ways; else INVALID_SIGNATURE. */
function checkedHeader(
  header: string | undefined,
  o: Pick<StripeSignatureOptions, "toleranceSeconds" | "now" | "log">,
): string {
  if (!header) throw invalidSignature();
  const signedAt = signedTimestamp(header);
  if (signedAt === undefined) {
    o.log.warn("stripe signature rejected", { reason: "not one plain t= timestamp" });
    throw invalidSignature();
  }
  const now = o.now();
  // Ahead: as this guard always refused. Behind: exactly as Stripe's check counts the age.
  const ahead = signedAt * 1000 > now + o.toleranceSeconds * 1000;
  if (ahead || Math.floor(now / 1000) - signedAt > o.toleranceSeconds) {
    const reason = ahead ? "timestamp in the future" : "timestamp too old";
    o.log.warn("stripe signature rejected", { reason, signedAt });
    throw invalidSignature();
  }
  return header;
}

function invalidSignature(): BadRequest {
  return new BadRequest(
    "The Stripe-Signature header does not match the body with any configured secret, or is too old.",
    "INVALID_SIGNATURE",
  );
}
