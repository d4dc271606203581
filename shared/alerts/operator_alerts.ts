/**
 * Direct operator alerts: what the platform calls (`platform.alertOperators`) when an instance
 * enters the database fail-safe or a circuit breaker opens. The queue lives in the database
 * that may be down, so these go straight to DISCORD_WEBHOOK_URL, at most once per kind per
 * ALERT_DIRECT_COOLDOWN_SECONDS per instance (an outage trips every request; operators need one
 * message). Each is recorded in `internal.alerts` once the database is reachable, by the queue
 * that owns that table (alert_queue.ts's `recordDirect`): as sent when
 * the direct send worked (so it is never sent twice), else as queued, so the queue delivers it
 * when Discord is back. Nothing here ever throws: it runs in the background of whatever failed.
 * A direct send does not take from the fleet's shared bucket (shared/alerts/discord_webhook_state.ts):
 * the database that holds it may be what is down; these are at most one per kind per cooldown
 * per instance, and the client still follows the headers and `retry_after` it sees.
 *
 * @example
 * ```ts
 * import type { Platform } from "../platform/platform.ts";
 * import { operatorAlerts } from "./operator_alerts.ts";
 *
 * declare const platform: Platform;
 * const { env, limits, log, fetch, background } = platform;
 * // undefined when DISCORD_WEBHOOK_URL is not set
 * const direct = operatorAlerts({ env, limits, log, fetch, db: () => platform.db, background });
 * direct?.alert("database", "Database unavailable", "The instance entered fail-safe…");
 * direct?.databaseUp(); // records what waited for the database
 * ```
 */
import { type DirectRecord, recordDirect } from "./alert_queue.ts";
import type { Database } from "../db/db.ts";
import { DiscordClient, DiscordRateLimited } from "./discord_client.ts";
import { neutralize, renderAlert } from "./discord_text.ts";
import { httpUrl } from "../env.ts";
import type { Limits } from "../limits.ts";
import type { Logger } from "../logger.ts";

export interface OperatorAlertsOptions {
  /** The raw environment: DISCORD_WEBHOOK_URL is read from it. */
  env: Record<string, string | undefined>;
  limits: Limits;
  log: Logger;
  /** The platform's database (a getter: it is created after the platform object). */
  db: () => Database | undefined;
  /** Keeps work alive past the caller (the platform's `background`). */
  background: (work: Promise<unknown>) => void;
  fetch?: typeof fetch;
  now?: () => number;
  /** Names this instance in the message (default: a random id per process). */
  instance?: string;
}

/** At most this many alerts wait in memory for the database; beyond it the oldest is logged and dropped. */
const PENDING_MAX = 100;
/** A 429 on a direct alert is waited out once when Discord asks for at most this long. */
const RATE_LIMIT_WAIT_MAX_MS = 10_000;

/** One instance's direct alerts. */
export class OperatorAlerts {
  readonly #o: OperatorAlertsOptions;
  readonly #client: DiscordClient;
  readonly #now: () => number;
  readonly #instance: string;
  /** When each kind was last sent (bounded: kinds are few). */
  readonly #lastSent = new Map<string, number>();
  readonly #pending: DirectRecord[] = [];
  #flushing: Promise<void> | undefined;

  constructor(webhookUrl: string, opts: OperatorAlertsOptions) {
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
    this.#instance = opts.instance ?? crypto.randomUUID().slice(0, 8);
    this.#client = new DiscordClient({
      webhookUrl,
      timeoutMs: opts.limits.DISCORD_TIMEOUT_MS,
      fetch: opts.fetch,
      now: this.#now,
    });
  }

  /** Tells operators now (subject to the per-kind cooldown); logs it either way. Never throws. */
  readonly alert = (kind: string, title: string, message: string): void => {
    try {
      this.#o.log.error("operator alert", { kind, title, message });
      const now = this.#now();
      const last = this.#lastSent.get(kind);
      if (last !== undefined && now - last < this.#o.limits.ALERT_DIRECT_COOLDOWN_SECONDS * 1000) {
        return;
      }
      if (this.#lastSent.size >= 100) this.#lastSent.delete(this.#lastSent.keys().next().value!);
      this.#lastSent.set(kind, now);
      this.#o.background(this.#deliver(kind, title, message, now));
    } catch (err) {
      this.#o.log.error("operator alert failed", { kind, error: err });
    }
  };

  /** The database is reachable again: records the alerts that waited for it. Never throws. */
  readonly databaseUp = (): void => {
    this.#o.background(this.flush());
  };

  /** Records waiting alerts in the queue table while the database is up. Never rejects. */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => this.#flushing = undefined);
    return this.#flushing;
  }

  async #deliver(kind: string, title: string, message: string, at: number): Promise<void> {
    const record: DirectRecord = {
      id: crypto.randomUUID(),
      title: neutralize(title),
      message: neutralize(`${message}\nInstance ${this.#instance} · ${kind} · direct alert`),
      occurredAt: at,
    };
    const content = renderAlert({
      severity: "critical",
      title: record.title,
      message: record.message,
      count: 1,
    });
    try {
      const sent = await this.#send(content);
      record.sentAt = this.#now();
      record.messageId = sent.id;
    } catch (err) {
      this.#o.log.error(
        "direct operator alert not delivered; it is queued once the database is up",
        {
          kind,
          error: err,
        },
      );
    }
    if (this.#pending.length >= PENDING_MAX) {
      const dropped = this.#pending.shift()!;
      this.#o.log.error("operator alert dropped from memory before it was recorded", {
        title: dropped.title,
        sent: dropped.sentAt !== undefined,
      });
    }
    this.#pending.push(record);
    await this.flush();
  }

  /** One send, and one more after a short 429 (`retry_after`). */
  async #send(content: string): Promise<{ id: string }> {
    try {
      return await this.#client.execute(content);
    } catch (err) {
      if (!(err instanceof DiscordRateLimited) || err.retryAfterMs > RATE_LIMIT_WAIT_MAX_MS) {
        throw err;
      }
      return await this.#client.execute(content); // the client waits out retry_after itself
    }
  }

  async #flush(): Promise<void> {
    const db = this.#o.db();
    if (!db?.up || this.#pending.length === 0) return;
    while (this.#pending.length > 0) {
      const next = this.#pending[0];
      try {
        await recordDirect(db, next);
      } catch (err) {
        this.#o.log.warn("operator alert not recorded yet; retried when the database is back", {
          error: err,
        });
        return;
      }
      this.#pending.shift();
    }
  }
}

/**
 * The platform's `alertOperators` when DISCORD_WEBHOOK_URL is configured and well-formed;
 * undefined otherwise (the platform then only logs, and discord-alert reports the variable).
 */
export function operatorAlerts(opts: OperatorAlertsOptions): OperatorAlerts | undefined {
  const parsed = httpUrl.safeParse(opts.env.DISCORD_WEBHOOK_URL);
  return parsed.success ? new OperatorAlerts(parsed.data, opts) : undefined;
}
