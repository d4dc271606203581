/**
 * The second alert channel: a Slack-style incoming webhook (`ALERT_FALLBACK_WEBHOOK_URL`,
 * `POST {"text": …}`), told when Discord delivery is broken and given the critical alerts
 * Discord cannot take, at most once per kind per ALERT_FALLBACK_COOLDOWN_SECONDS for the whole
 * fleet (the cooldown is a row in `internal.alert_fallback_sends`, claimed atomically).
 *
 * Slack's message formatting (https://api.slack.com/reference/surfaces/formatting#escaping):
 * `&`, `<` and `>` are escaped, so no text can become a link or a `<!channel>` ping.
 *
 * @example
 * ```ts
 * import { AlertFallback } from "./alert_fallback.ts";
 * import type { Database } from "../db/db.ts";
 * import { parseLimits } from "../limits.ts";
 * import { createLogger } from "../logger.ts";
 *
 * declare const db: Database; // the platform's pool
 * const fallback = new AlertFallback(db, {
 *   webhookUrl: "https://hooks.slack.com/services/T000/B000/XXXX",
 *   limits: parseLimits({}),
 *   log: createLogger(),
 * });
 * const outcome = await fallback.notify("discord-unusable", "Discord alert delivery is broken: …");
 * outcome; // "sent" | "cooldown" | "failed"
 * ```
 */
import type { Database } from "../db/db.ts";
import { fetchWithDeadline } from "../resilience/http_client.ts";
import type { Limits } from "../limits.ts";
import type { Logger } from "../logger.ts";
import { clip } from "../text.ts";

export type FallbackLimits = Pick<
  Limits,
  "ALERT_FALLBACK_COOLDOWN_SECONDS" | "ALERT_FALLBACK_TIMEOUT_MS" | "ALERT_PURGE_BATCH_SIZE"
>;

export interface AlertFallbackOptions {
  webhookUrl: string;
  limits: FallbackLimits;
  log: Logger;
  fetch?: typeof fetch;
}

/** Slack's text escaping: only these three characters are control characters. */
export function slackEscape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Slack shows up to 40,000 characters of `text`; alerts stay far below, cut here to be sure. */
const TEXT_MAX = 3_000;

/** The fallback channel. `notify` never throws: a broken second channel is logged, not fatal. */
export class AlertFallback {
  readonly #db: Database;
  readonly #o: AlertFallbackOptions;

  constructor(db: Database, opts: AlertFallbackOptions) {
    this.#db = db;
    this.#o = { ...opts, limits: { ...opts.limits } };
  }

  /**
   * Posts `text` unless the fleet sent a message of `kind` within the cooldown. A post that
   * fails gives the cooldown back, so the next occasion tries again.
   */
  async notify(kind: string, text: string): Promise<"sent" | "cooldown" | "failed"> {
    const { log, limits } = this.#o;
    // The claim's exact timestamp, compared as text: postgres.js would send it back as a JS Date
    // (a timestamptz parameter), which drops the microseconds.
    let claimed: string | undefined;
    try {
      const [row] = await this.#db.query((sql) =>
        sql<{ stamp: string }[]>`
          insert into internal.alert_fallback_sends as f (kind, sent_at)
          values (${clip(kind, 300)}, clock_timestamp())
          on conflict (kind) do update set sent_at = excluded.sent_at
          where f.sent_at <= excluded.sent_at
            - make_interval(secs => ${limits.ALERT_FALLBACK_COOLDOWN_SECONDS}::int)
          returning sent_at::text as stamp`
      );
      if (!row) return "cooldown";
      claimed = row.stamp;
      await fetchWithDeadline(
        this.#o.webhookUrl,
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ text: clip(slackEscape(text), TEXT_MAX) }),
        },
        {
          timeoutMs: limits.ALERT_FALLBACK_TIMEOUT_MS,
          upstream: "fallback alert webhook",
          fetch: this.#o.fetch,
        },
        async (res) => {
          const body = await res.text();
          if (!res.ok) {
            throw new Error(
              `The fallback alert webhook answered ${res.status}: ${clip(body, 100)}`,
            );
          }
        },
      );
      log.warn("fallback alert sent", { kind });
      return "sent";
    } catch (err) {
      log.error("fallback alert not delivered", { kind, error: err });
      if (claimed) {
        await this.#db.query((sql) =>
          sql`update internal.alert_fallback_sends set sent_at = '-infinity'
              where kind = ${clip(kind, 300)} and sent_at::text = ${claimed!}`
        ).catch((e) => log.warn("fallback cooldown not given back", { kind, error: e }));
      }
      return "failed";
    }
  }

  /** Drops cooldowns long past (kinds include alert keys, so rows would otherwise pile up). */
  async purge(): Promise<number> {
    const [row] = await this.#db.query((sql) =>
      sql<{ n: number }[]>`
        with gone as (
          delete from internal.alert_fallback_sends where kind in (
            select kind from internal.alert_fallback_sends
            where sent_at < now() - make_interval(secs => ${
        2 * this.#o.limits.ALERT_FALLBACK_COOLDOWN_SECONDS
      }::int)
            limit ${this.#o.limits.ALERT_PURGE_BATCH_SIZE}
            for update skip locked)
          returning 1)
        select count(*)::int as n from gone`
    );
    return row.n;
  }
}
