/**
 * Discord webhook delivery: executes a webhook (`POST <webhook>?wait=true`) with content made
 * safe by discord_text.ts, within Discord's size limits, honouring Discord's rate limits from its
 * response headers.
 *
 * Rate limits (https://discord.com/developers/docs/topics/rate-limits): every answer carries
 * `X-RateLimit-Limit`, `-Remaining`, `-Reset-After` (seconds, with decimals) and `-Bucket`; when
 * `Remaining` reaches 0 nothing more is sent on that bucket until `Reset-After` has passed. A
 * `429` carries `{"message", "retry_after" (seconds), "global"}` (and `X-RateLimit-Global`,
 * `Retry-After`); a global one pauses every send. Discord asks clients not to hard-code limits
 * but to follow the headers, which is what this does; sends are serialized per client, so two
 * callers in one instance never race for the last slot of a bucket. Each answer's bucket state
 * is also returned (`rateLimit`), so the drainer can share it with every other instance
 * (shared/alerts/discord_webhook_state.ts).
 *
 * @example
 * ```ts
 * import { DiscordClient } from "./discord_client.ts";
 * import { renderAlert } from "./discord_text.ts";
 *
 * const discord = new DiscordClient({
 *   webhookUrl: "https://discord.com/api/webhooks/123/abc",
 *   timeoutMs: 5_000,
 * });
 * const content = renderAlert({
 *   severity: "critical",
 *   title: "Database unavailable",
 *   message: "The instance entered fail-safe.",
 *   count: 1,
 * });
 * // Throws DiscordRateLimited, DiscordRejected or UpstreamUnavailable.
 * const { id } = await discord.execute(content);
 * ```
 */
import { delay } from "../resilience/delay.ts";
import { DISCORD_LIMITS, truncate } from "./discord_text.ts";
import { UpstreamUnavailable } from "../errors.ts";
import {
  fetchWithDeadline,
  UpstreamTimeout,
  UpstreamUnreachable,
} from "../resilience/http_client.ts";
import { clip } from "../text.ts";

/** Message flag SUPPRESS_EMBEDS (1 << 2): no link previews under an alert. */
export const SUPPRESS_EMBEDS = 1 << 2;

/** A bucket's state from one answer's `X-RateLimit-*` headers. */
export interface RateLimitInfo {
  /** `X-RateLimit-Bucket`. */
  bucket: string;
  /** `X-RateLimit-Limit` (requests per window), null when absent. */
  limit: number | null;
  /** `X-RateLimit-Remaining`. */
  remaining: number;
  /** `X-RateLimit-Reset-After` in ms (rounded up). */
  resetAfterMs: number;
}

/** Discord answered 429: nothing was posted; try again after `retryAfterMs`. */
export class DiscordRateLimited extends Error {
  constructor(
    readonly retryAfterMs: number,
    readonly global: boolean,
    readonly rateLimit?: RateLimitInfo,
  ) {
    super(`Discord rate limited the webhook${global ? " globally" : ""} for ${retryAfterMs} ms`);
    this.name = "DiscordRateLimited";
  }
}

/**
 * Discord refused the request (a 4xx other than 429): sending it again cannot succeed. With
 * `webhookGone` (401, 403, 404: e.g. `10015` Unknown Webhook, `50027` Invalid Webhook Token) it
 * is the webhook that is broken, not the message: no other message can succeed either.
 */
export class DiscordRejected extends Error {
  constructor(
    readonly status: number,
    readonly discordCode: number | null,
    reason: string,
    readonly rateLimit?: RateLimitInfo,
  ) {
    super(
      `Discord refused the message with ${status}${
        discordCode ? ` (code ${discordCode})` : ""
      }: ${reason}`,
    );
    this.name = "DiscordRejected";
  }

  /** 401, 403 or 404: the webhook was deleted, its token is wrong or it may not post. */
  get webhookGone(): boolean {
    return this.status === 401 || this.status === 403 || this.status === 404;
  }
}

export interface DiscordClientOptions {
  /** `https://discord.com/api/webhooks/<id>/<token>` (query parameters such as `thread_id` kept). */
  webhookUrl: string;
  /** Deadline of each call (DISCORD_TIMEOUT_MS). */
  timeoutMs: number;
  fetch?: typeof fetch;
  now?: () => number;
}

interface BucketState {
  limit: number;
  remaining: number;
  resetAt: number;
}

/** Delivery counters of one client, for logs and tests. */
export interface DiscordCounters {
  sent: number;
  rateLimited: number;
  rejected: number;
  failed: number;
}

/** One webhook's client: serialized sends that follow Discord's rate-limit headers. */
export class DiscordClient {
  readonly #url: string;
  readonly #timeoutMs: number;
  readonly #fetch?: typeof fetch;
  readonly #now: () => number;
  /** Buckets by `X-RateLimit-Bucket`; this client's one route maps to one of them. */
  readonly #buckets = new Map<string, BucketState>();
  #bucket: string | undefined;
  #globalUntil = 0;
  #chain: Promise<unknown> = Promise.resolve();
  readonly counters: DiscordCounters = { sent: 0, rateLimited: 0, rejected: 0, failed: 0 };

  constructor(opts: DiscordClientOptions) {
    const url = new URL(opts.webhookUrl);
    url.searchParams.set("wait", "true"); // so a message Discord did not save is an error
    this.#url = url.toString();
    this.#timeoutMs = opts.timeoutMs;
    this.#fetch = opts.fetch;
    this.#now = opts.now ?? Date.now;
  }

  /** Ms until Discord accepts a send (bucket exhausted, or a 429 still running); 0 when it does. */
  waitMs(): number {
    const now = this.#now();
    let until = this.#globalUntil;
    const bucket = this.#bucket ? this.#buckets.get(this.#bucket) : undefined;
    if (bucket && bucket.remaining <= 0) until = Math.max(until, bucket.resetAt);
    return Math.max(0, until - now);
  }

  /**
   * Posts `content` (cut to 2000 characters) with `allowed_mentions: {parse: []}`, after waiting
   * for the rate limit. Returns the message id and the bucket state the answer stated. Throws
   * DiscordRateLimited (429), DiscordRejected (another 4xx: final), UpstreamUnavailable (5xx,
   * timeout, unreachable).
   */
  execute(
    content: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ id: string; rateLimit?: RateLimitInfo }> {
    const run = () => this.#send(content, opts.signal);
    const result = this.#chain.then(run, run);
    this.#chain = result.catch(() => {});
    return result;
  }

  async #send(
    content: string,
    signal?: AbortSignal,
  ): Promise<{ id: string; rateLimit?: RateLimitInfo }> {
    const wait = this.waitMs();
    if (wait > 0) await delay(wait, { signal });
    const payload = {
      content: truncate(content, DISCORD_LIMITS.content),
      // Never ping anyone, whatever the text says (Discord's allowed mentions object).
      allowed_mentions: { parse: [] },
      flags: SUPPRESS_EMBEDS,
    };
    let status: number;
    let headers: Headers;
    let text: string;
    try {
      ({ status, headers, text } = await fetchWithDeadline(
        this.#url,
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(payload),
        },
        { timeoutMs: this.#timeoutMs, upstream: "Discord", fetch: this.#fetch, signal },
        async (res) => ({ status: res.status, headers: res.headers, text: await res.text() }),
      ));
    } catch (err) {
      this.counters.failed++;
      if (err instanceof UpstreamTimeout) {
        throw new UpstreamUnavailable(
          "Discord",
          `no answer within ${this.#timeoutMs} ms`,
          1000,
          err,
        );
      }
      if (err instanceof UpstreamUnreachable) {
        throw new UpstreamUnavailable("Discord", "unreachable", 1000, err);
      }
      throw err;
    }
    const rateLimit = rateLimitOf(headers);
    this.#observe(rateLimit);
    const body = parseJson(text);
    if (status >= 200 && status < 300) {
      this.counters.sent++;
      return { id: typeof body?.id === "string" ? body.id : "", rateLimit };
    }
    if (status === 429) {
      this.counters.rateLimited++;
      const retryAfterMs = retryAfterOf(body, headers);
      const global = body?.global === true || headers.get("x-ratelimit-global") === "true";
      const until = this.#now() + retryAfterMs;
      if (global) {
        this.#globalUntil = Math.max(this.#globalUntil, until);
      } else if (this.#bucket) {
        const b = this.#buckets.get(this.#bucket)!;
        b.remaining = 0;
        b.resetAt = Math.max(b.resetAt, until);
      } else {
        this.#globalUntil = Math.max(this.#globalUntil, until); // no bucket known: pause all
      }
      throw new DiscordRateLimited(retryAfterMs, global, rateLimit);
    }
    if (status >= 400 && status < 500) {
      this.counters.rejected++;
      const code = typeof body?.code === "number" ? body.code : null;
      const reason = typeof body?.message === "string" ? clip(body.message, 200) : `HTTP ${status}`;
      throw new DiscordRejected(status, code, reason, rateLimit);
    }
    this.counters.failed++;
    throw new UpstreamUnavailable("Discord", `answered ${status}`);
  }

  /** Records the bucket state from an answer's `X-RateLimit-*` headers. */
  #observe(info: RateLimitInfo | undefined): void {
    if (!info) return;
    this.#bucket = info.bucket;
    if (!this.#buckets.has(info.bucket) && this.#buckets.size >= 16) this.#buckets.clear();
    this.#buckets.set(info.bucket, {
      limit: info.limit ?? 0,
      remaining: info.remaining,
      resetAt: this.#now() + info.resetAfterMs,
    });
  }
}

/** The bucket state of an answer, when it carries the `X-RateLimit-*` headers. */
export function rateLimitOf(headers: Headers): RateLimitInfo | undefined {
  const bucket = headers.get("x-ratelimit-bucket");
  const remaining = Number(headers.get("x-ratelimit-remaining") ?? NaN);
  const resetAfter = Number(headers.get("x-ratelimit-reset-after") ?? NaN);
  if (!bucket || !Number.isFinite(remaining) || !Number.isFinite(resetAfter)) return undefined;
  const limit = Number(headers.get("x-ratelimit-limit") ?? NaN);
  return {
    bucket,
    limit: Number.isInteger(limit) && limit > 0 ? limit : null,
    remaining: Math.max(0, Math.floor(remaining)),
    resetAfterMs: Math.max(0, Math.ceil(resetAfter * 1000)),
  };
}

/** `retry_after` from the 429 body (seconds, decimals), else `Retry-After`, else 1 s. */
function retryAfterOf(body: Record<string, unknown> | null, headers: Headers): number {
  const seconds = typeof body?.retry_after === "number"
    ? body.retry_after
    : Number(headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds >= 0 ? Math.ceil(seconds * 1000) : 1000;
}

function parseJson(text: string): Record<string, unknown> | null {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}
