/**
 * Stripe's event list (`GET /v1/events`, https://docs.stripe.com/api/events/list) read through the
 * real `stripe` library, for the catch-up: its Fetch HTTP client, pointed at `STRIPE_API_URL`
 * (host, port and protocol), with every request under a deadline (`fetchWithDeadline`, the body
 * read inside it) and through the instance's "Stripe API" breaker. The library's own retries are
 * off: the schedule is the retry, and a run that fails changes nothing.
 *
 * Failures come back as the contract's answers, never a 500:
 * - unreachable, past the deadline, `429` or `5xx`: `503 UPSTREAM_UNAVAILABLE` with `Retry-After`
 *   (and they count toward the breaker); an open breaker: `503 CIRCUIT_OPEN`;
 * - any other refusal (`401` a wrong key, `400`) or an answer that is not a list:
 *   `502 STRIPE_REFUSED` with `Retry-After` (Stripe answered, so the breaker stays closed).
 *
 * The library is imported by the first call, not at boot: webhook deliveries never load it
 * through this module.
 *
 * @example
 * ```ts
 * import type { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { stripeEvents } from "./stripe_api.ts";
 *
 * declare const breakers: Breakers;
 * const events = stripeEvents({
 *   apiUrl: new URL("https://api.stripe.com"),
 *   secretKey: "sk_test_example",
 *   timeoutMs: 5_000,
 *   breaker: breakers.get("Stripe API"),
 * });
 * const list = events.list({
 *   types: ["invoice.paid"],
 *   created: { gte: 1764633600, lte: 1764637200 },
 *   limit: 100,
 * });
 * for (let next = await list.next(); !next.done; next = await list.next()) {
 *   console.info(next.value.id);
 * }
 * ```
 */
import type Stripe from "stripe";
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import {
  CircuitOpen,
  HttpError,
  retryAfterSeconds,
  UpstreamUnavailable,
} from "../../shared/errors.ts";
import { fetchWithDeadline, UpstreamTimeout } from "../../shared/resilience/http_client.ts";

/** The upstream's name, in errors and as its breaker's name. */
export const STRIPE_UPSTREAM = "Stripe API";

/** Stripe answered, but not with what the catch-up can use (a wrong key, a bad request). */
export class StripeRefused extends HttpError {
  constructor(reason: string, retryAfterMs = 60_000) {
    super(502, "STRIPE_REFUSED", `Stripe's API refused the catch-up's request (${reason}).`, {
      headers: { "retry-after": String(retryAfterSeconds(retryAfterMs)) },
    });
  }
}

/**
 * Stripe no longer has the event a resumed scan pages from (`starting_after`: 400,
 * resource_missing): it is past Stripe's 30 days, and so is everything older than it.
 */
export class CursorEventGone extends Error {
  constructor() {
    super("The event the scan resumes from is no longer listed by Stripe");
    this.name = "CursorEventGone";
  }
}

/** Stripe answered 429 or 5xx: a failure for the breaker, `503` for the caller. */
class StripeFailed extends Error {
  constructor(readonly status: number, readonly retryAfterMs: number) {
    super(`Stripe's API answered ${status}`);
    this.name = "StripeFailed";
  }
}

export interface StripeEventsOptions {
  /** `STRIPE_API_URL`: where Stripe's API is (its path is ignored, as the library's host is). */
  apiUrl: URL;
  /** `STRIPE_SECRET_KEY` (sk_ or rk_ with read access to events). */
  secretKey: string;
  /** Deadline of each request, its body included (STRIPE_TIMEOUT_MS). */
  timeoutMs: number;
  breaker: Breaker;
  fetch?: typeof fetch;
}

/** The event list's parameters the catch-up uses. */
export interface EventListParams {
  types: string[];
  created: { gte: number; lte: number };
  limit: number;
  starting_after?: string;
}

/** An async iterator over events, newest first (the library's auto-pagination). */
export interface EventIterator {
  /** The next event; throws the typed failures of the module's summary. */
  next(): Promise<IteratorResult<Stripe.Event>>;
}

/** Stripe's event list, through the library; see the module's summary. */
export function stripeEvents(
  opts: StripeEventsOptions,
): { list(p: EventListParams): EventIterator } {
  let client: Promise<Stripe> | undefined;
  const guarded = guardedFetch(opts);
  const stripe = () =>
    client ??= import("stripe").then(({ default: Stripe }) =>
      new Stripe(opts.secretKey, {
        httpClient: Stripe.createFetchHttpClient(guarded),
        host: opts.apiUrl.hostname,
        port: opts.apiUrl.port || (opts.apiUrl.protocol === "http:" ? "80" : "443"),
        protocol: opts.apiUrl.protocol === "http:" ? "http" : "https",
        maxNetworkRetries: 0,
        // The library's own timeout is a backstop: the deadline in guardedFetch fires first.
        timeout: opts.timeoutMs * 2,
        telemetry: false,
      })
    );
  return {
    list(params) {
      let pages: Stripe.ApiListPromise<Stripe.Event> | undefined;
      return {
        async next() {
          try {
            pages ??= (await stripe()).events.list(params);
            return await pages.next();
          } catch (err) {
            const e = err as { type?: string; param?: string };
            if (e?.type === "StripeInvalidRequestError" && e.param === "starting_after") {
              throw new CursorEventGone();
            }
            throw stripeFailure(err);
          }
        },
      };
    },
  };
}

/** `fetch` under the deadline and through the breaker; 429 and 5xx throw (breaker failures). */
function guardedFetch(opts: StripeEventsOptions): typeof fetch {
  return (input, init) =>
    opts.breaker.run(async () => {
      const res = await fetchWithDeadline(
        input instanceof Request ? input.url : input,
        init ?? {},
        {
          timeoutMs: opts.timeoutMs,
          upstream: STRIPE_UPSTREAM,
          fetch: opts.fetch,
          signal: init?.signal ?? undefined,
        },
        // The body is read inside the deadline: a stalled body is a timeout too.
        async (r) =>
          new Response(await r.arrayBuffer(), {
            status: r.status,
            statusText: r.statusText,
            headers: r.headers,
          }),
      );
      if (res.status === 429 || res.status >= 500) {
        throw new StripeFailed(res.status, retryAfterMs(res));
      }
      return res;
    });
}

/** `Retry-After` (seconds) of a failed answer, in ms: 1 s when absent, at most 10 min. */
function retryAfterMs(res: Response): number {
  const seconds = Number(res.headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 600) * 1000 : 1000;
}

/** The contract's answer for a failed list call (see the module's summary). */
export function stripeFailure(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  // The library wraps what its HTTP client threw in a StripeConnectionError, as `detail`.
  const e = err as { type?: string; detail?: unknown; statusCode?: number; code?: string };
  const cause = e?.type === "StripeConnectionError" ? e.detail : err;
  if (cause instanceof CircuitOpen) return cause;
  if (cause instanceof StripeFailed) {
    return new UpstreamUnavailable(
      STRIPE_UPSTREAM,
      `answered ${cause.status}`,
      cause.retryAfterMs,
      err,
    );
  }
  if (cause instanceof UpstreamTimeout) {
    return new UpstreamUnavailable(STRIPE_UPSTREAM, "timed out", 1000, err);
  }
  if (e?.type === "StripeConnectionError" || cause instanceof Error && cause !== err) {
    return new UpstreamUnavailable(STRIPE_UPSTREAM, "unreachable", 1000, err);
  }
  if (typeof e?.statusCode === "number") {
    const code = typeof e.code === "string" && /^[a-z_]{1,64}$/.test(e.code) ? `, ${e.code}` : "";
    return new StripeRefused(`${e.statusCode}${code}`);
  }
  if (err instanceof Error && /Stripe API response/.test(err.message)) {
    return new StripeRefused("the answer is not a list");
  }
  if (e?.type?.startsWith("Stripe")) return new StripeRefused(e.type);
  return new UpstreamUnavailable(STRIPE_UPSTREAM, "unreadable answer", 1000, err);
}
