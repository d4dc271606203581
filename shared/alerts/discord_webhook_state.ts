/**
 * The Discord webhook's state shared by the whole fleet, in Postgres (`internal.alert_webhooks`):
 * its rate-limit bucket, spent one request at a time by `acquire()` before each send, and its
 * health (failing since when; unusable after a 401/403/404, and why). Every instance reads and
 * writes the same row, so together they stay within Discord's limits and stop sending to a
 * deleted webhook together.
 *
 * Why in the database: Discord's bucket belongs to the webhook, not to an instance; two
 * instances each following the headers they saw spend the same remaining requests twice
 * (https://discord.com/developers/docs/topics/rate-limits: clients that keep hitting 429s, and
 * 401/403/404s, count towards Cloudflare's 10,000 invalid requests per 10 minutes and get banned).
 *
 * @example
 * ```ts
 * import type { Database } from "../db/db.ts";
 * import { DiscordWebhookState } from "./discord_webhook_state.ts";
 * import { parseLimits } from "../limits.ts";
 *
 * declare const db: Database;
 * const webhook = new DiscordWebhookState(db, {
 *   webhookUrl: "https://discord.com/api/webhooks/123/abc",
 *   limits: parseLimits({}),
 * });
 * // { granted: true, probe } | { granted: false, waitMs, unusableReason }
 * const permit = await webhook.acquire();
 * if (permit.granted) {
 *   // ... post to Discord, then:
 *   await webhook.observe({ outcome: "sent" });
 * }
 * ```
 */
import type { Database } from "../db/db.ts";
import type { RateLimitInfo } from "./discord_client.ts";
import type { Limits } from "../limits.ts";
import { clip } from "../text.ts";

/** What `acquire()` answers. */
export type SendPermit =
  | { granted: true; probe: boolean }
  | { granted: false; waitMs: number; unusableReason: string | null };

/** How a send ended, for `observe()`. */
export type SendOutcome =
  /** Discord took the message. */
  | "sent"
  /** Discord refused this message (a 4xx about its content): Discord and the webhook work. */
  | "rejected"
  /** 429. */
  | "rate_limited"
  /** 5xx, timeout, unreachable. */
  | "failed"
  /** 401/403/404: the webhook itself is broken. */
  | "gone";

export interface Observation {
  outcome: SendOutcome;
  rateLimit?: RateLimitInfo;
  /** A 429's `retry_after` in ms. */
  retryAfterMs?: number;
  /** A 429 was global. */
  global?: boolean;
  /** Why it failed (kept for status; never a secret: Discord's own message and code). */
  reason?: string;
}

/** The webhook's health after an observation. */
export interface WebhookHealth {
  failingSince: number | null;
  unusableSince: number | null;
  /** This observation marked it unusable (it was usable before). */
  becameUnusable: boolean;
  /** This observation showed a webhook marked unusable works again. */
  recovered: boolean;
}

/** What `status` shows about the webhook. */
export interface WebhookStatus {
  usable: boolean;
  unusableSince: string | null;
  /** Why it is unusable, e.g. "Discord refused the message with 404 (code 10015): Unknown Webhook". */
  unusableReason: string | null;
  nextProbeAt: string | null;
  failingSince: string | null;
  lastError: string | null;
  lastSentAt: string | null;
  bucket: { limit: number | null; remaining: number; resetAt: string | null };
  globalUntil: string | null;
  rateLimited: number;
}

export type WebhookStateLimits = Pick<
  Limits,
  "ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS" | "DISCORD_TIMEOUT_MS"
>;

/** A stable id for a webhook URL that does not reveal its token (SHA-256, hex, first 32). */
export async function webhookId(webhookUrl: string): Promise<string> {
  const url = new URL(webhookUrl);
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`${url.origin}${url.pathname}`),
  );
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("")
    .slice(0, 32);
}

/** One webhook's fleet-wide state. Every method throws DatabaseUnavailable when the database is down. */
export class DiscordWebhookState {
  readonly #db: Database;
  readonly #l: WebhookStateLimits;
  readonly #id: Promise<string>;

  constructor(db: Database, opts: { webhookUrl: string; limits: WebhookStateLimits }) {
    this.#db = db;
    this.#l = { ...opts.limits };
    this.#id = webhookId(opts.webhookUrl);
  }

  get #probeEveryMs(): number {
    return this.#l.ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS * 1000;
  }

  /**
   * Takes one request from the bucket for the fleet. While the limit is unknown (first send) one
   * request goes at a time; while the webhook is unusable only one probe per
   * ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS is granted.
   */
  async acquire(): Promise<SendPermit> {
    const id = await this.#id;
    const [row] = await this.#db.query((sql) =>
      sql<
        { granted: boolean; probe: boolean; wait_ms: number; unusable_reason: string | null }[]
      >`
        select granted, probe, wait_ms, unusable_reason
        from internal.alert_webhook_acquire(${id}, ${this.#l.DISCORD_TIMEOUT_MS}::int,
          ${this.#probeEveryMs}::int)`
    );
    return row.granted
      ? { granted: true, probe: row.probe }
      : { granted: false, waitMs: Number(row.wait_ms), unusableReason: row.unusable_reason };
  }

  /** Records what a send taught (bucket headers, a 429, the outcome); returns the health after it. */
  async observe(o: Observation): Promise<WebhookHealth> {
    const id = await this.#id;
    const rl = o.rateLimit;
    const [row] = await this.#db.query((sql) =>
      sql<
        {
          failing_since: Date | null;
          unusable_since: Date | null;
          became_unusable: boolean;
          recovered: boolean;
        }[]
      >`
        select * from internal.alert_webhook_observe(${id}, ${o.outcome},
          ${rl?.bucket ?? null}::text, ${rl?.limit ?? null}::int, ${rl?.remaining ?? null}::int,
          ${rl?.resetAfterMs ?? null}::int, ${o.retryAfterMs ?? null}::int,
          ${o.global ?? false}::boolean, ${
        o.reason === undefined ? null : clip(o.reason, 500)
      }::text,
          ${this.#probeEveryMs}::int)`
    );
    return {
      failingSince: row.failing_since ? new Date(row.failing_since).getTime() : null,
      unusableSince: row.unusable_since ? new Date(row.unusable_since).getTime() : null,
      becameUnusable: row.became_unusable,
      recovered: row.recovered,
    };
  }

  /** The webhook's state for `status` (null when nothing was ever sent). */
  async status(): Promise<WebhookStatus | null> {
    return webhookStatus(this.#db, await this.#id);
  }
}

/** The state of one webhook (by `webhookId`), or of the most recently used one. */
export async function webhookStatus(db: Database, id?: string): Promise<WebhookStatus | null> {
  const rows = await db.query((sql) =>
    sql<
      {
        unusable_since: Date | null;
        unusable_reason: string | null;
        next_probe_at: Date | null;
        failing_since: Date | null;
        last_error: string | null;
        last_sent_at: Date | null;
        bucket_limit: number | null;
        remaining: number;
        reset_at: Date | null;
        global_until: Date | null;
        rate_limited: number;
      }[]
    >`
      select unusable_since, unusable_reason, next_probe_at, failing_since, last_error,
        last_sent_at, bucket_limit, remaining, reset_at, global_until, rate_limited
      from internal.alert_webhooks
      where ${id ?? null}::text is null or webhook = ${id ?? null}::text
      order by updated_at desc limit 1`
  );
  const w = rows[0];
  if (!w) return null;
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    usable: w.unusable_since === null,
    unusableSince: iso(w.unusable_since),
    unusableReason: w.unusable_reason,
    nextProbeAt: iso(w.next_probe_at),
    failingSince: iso(w.failing_since),
    lastError: w.last_error,
    lastSentAt: iso(w.last_sent_at),
    bucket: { limit: w.bucket_limit, remaining: w.remaining, resetAt: iso(w.reset_at) },
    globalUntil: iso(w.global_until),
    rateLimited: w.rate_limited,
  };
}
