/**
 * The drainer: delivers the alert queue (shared/alerts/alert_queue.ts) to Discord within a time budget,
 * spending the webhook's rate-limit bucket that the whole fleet shares
 * (shared/alerts/discord_webhook_state.ts), and telling the fallback channel (shared/alerts/alert_fallback.ts)
 * when Discord delivery is broken.
 *
 * - Each send first takes one request from the fleet's bucket; when none is left the claim is
 *   given back and the drainer waits for the bucket's reset (or stops when that is past its
 *   budget). What Discord answers (`X-RateLimit-*`, a 429's `retry_after`, global or not) goes
 *   back into the shared bucket.
 * - 5xx and timeouts: the row is retried with backoff (`markFailed`); a 429 gives the claim back
 *   without using an attempt; another 4xx about the message dead-letters it. A `401`/`403`/`404`
 *   means the webhook itself is broken (deleted, wrong token): it is marked unusable for the
 *   fleet, the alert goes back to the queue with every other one (nothing is dead-lettered), and
 *   only one probe per ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS reaches the webhook until it works.
 * - When the webhook is unusable, or Discord delivery has failed for ALERT_FALLBACK_AFTER_SECONDS,
 *   the fallback channel gets one notice per kind per cooldown and the queued critical alerts.
 *
 * Work after a response runs through `kick()` (handed to the platform's `background`, i.e.
 * `EdgeRuntime.waitUntil` deployed); nothing here relies on a timer outliving a request.
 *
 * @example
 * ```ts
 * import { AlertDrainer } from "./alert_drainer.ts";
 * import { AlertFallback } from "./alert_fallback.ts";
 * import { AlertQueue } from "./alert_queue.ts";
 * import type { Platform } from "../platform/platform.ts";
 * import { DiscordClient } from "./discord_client.ts";
 * import { DiscordWebhookState } from "./discord_webhook_state.ts";
 *
 * declare const platform: Platform; // built at boot by createPlatform()
 * const { db, limits, log } = platform;
 * const webhookUrl = "https://discord.com/api/webhooks/123/abc";
 * const drainer = new AlertDrainer({
 *   queue: new AlertQueue(db, limits),
 *   client: new DiscordClient({ webhookUrl, timeoutMs: limits.DISCORD_TIMEOUT_MS }),
 *   webhook: new DiscordWebhookState(db, { webhookUrl, limits }),
 *   fallback: new AlertFallback(db, {
 *     webhookUrl: "https://hooks.slack.com/services/T000/B000/XXXX",
 *     limits,
 *     log,
 *   }),
 *   breaker: platform.breakers.get("discord"),
 *   limits,
 *   log,
 * });
 * const report = await drainer.drain(); // { sent, deferred, retried, dead, stopped, remaining }
 * ```
 */
import { delay } from "../resilience/delay.ts";
import { housekeeping } from "../resilience/housekeeping.ts";
import { retry } from "../resilience/retry.ts";
import type { AlertFallback } from "./alert_fallback.ts";
import type { AlertQueue, ClaimedAlert } from "./alert_queue.ts";
import type { Breaker } from "../resilience/circuit_breaker.ts";
import { type DiscordClient, DiscordRateLimited, DiscordRejected } from "./discord_client.ts";
import { renderAlert } from "./discord_text.ts";
import type { DiscordWebhookState } from "./discord_webhook_state.ts";
import { CircuitOpen, DatabaseUnavailable, UpstreamUnavailable } from "../errors.ts";
import type { Limits } from "../limits.ts";
import type { Logger } from "../logger.ts";

/** What one drain did. */
export interface DrainReport {
  sent: number;
  /** Rate limited by Discord (429): put back without using an attempt. */
  deferred: number;
  /** Failed (5xx, timeout) and queued again with backoff. */
  retried: number;
  /** Dead-lettered (refused by Discord, or out of attempts). */
  dead: number;
  /**
   * Why it stopped: nothing queued (`empty`), queued rows not due before the budget ends
   * (`waiting`: backoff or group wait), the budget spent (`budget`), the Discord breaker open,
   * or the webhook unusable (401/403/404: alerts kept until a probe shows it works).
   */
  stopped: "empty" | "waiting" | "budget" | "circuit_open" | "webhook_unusable";
  /** Rows still queued after it stopped. */
  remaining: number;
  durationMs: number;
}

export interface DrainerOptions {
  queue: AlertQueue;
  client: DiscordClient;
  /** The webhook's bucket and health, shared by the fleet. */
  webhook: DiscordWebhookState;
  /** The second channel (ALERT_FALLBACK_WEBHOOK_URL); without it, broken delivery is only logged and shown by status. */
  fallback?: AlertFallback;
  /** The "discord" breaker. */
  breaker: Breaker;
  limits: Pick<
    Limits,
    "ALERT_DRAIN_BUDGET_MS" | "ALERT_FALLBACK_AFTER_SECONDS" | "ALERT_PURGE_INTERVAL_SECONDS"
  >;
  log: Logger;
  now?: () => number;
}

/**
 * Recording a sent alert (a row left claimed would be re-sent after its lease), retried at one
 * level only: the database already re-runs a transient conflict itself (DB_MAX_ATTEMPTS) and
 * answers DatabaseBusy once those are spent, which is not retried again here. What the database
 * does not retry is a dropped connection: that gets one more attempt after a full-jitter wait of
 * up to 2 s, by which time its recovery gate has probed again.
 */
export const RECORD_SENT = retry({
  attempts: 2,
  handleWhen: (err) => err instanceof DatabaseUnavailable,
  backoff: { baseMs: 2_000, capMs: 2_000 },
});
/** Queued critical alerts forwarded to the fallback channel per pass, at most. */
const FORWARD_MAX = 20;

/**
 * Delivers the queue within a time budget. `drain()` runs one bounded pass (for `POST /drain`);
 * `kick()` runs passes in the background after an enqueue, one at a time per instance: a kick
 * during a pass wakes it (a new alert may be due now) and asks for one more pass at its end.
 */
export class AlertDrainer {
  readonly #o: DrainerOptions;
  readonly #now: () => number;
  readonly #wakers = new Set<() => void>();
  #running: Promise<void> | undefined;
  #again = false;
  readonly #purgeIfDue: () => void;

  constructor(opts: DrainerOptions) {
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
    this.#purgeIfDue = housekeeping({
      name: "sent alerts and fallback cooldowns",
      intervalMs: opts.limits.ALERT_PURGE_INTERVAL_SECONDS * 1000,
      run: async () => (await opts.queue.purge()) + (await opts.fallback?.purge() ?? 0),
      log: opts.log,
      now: this.#now,
    });
  }

  /** Starts (or nudges) background delivery; the promise ends when no pass is asked for. Never rejects. */
  kick(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      for (const wake of this.#wakers) wake();
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          try {
            await this.drain();
          } catch (err) {
            // The database is down (the status says so) or a bug: the rows stay queued.
            this.#o.log.warn("alert delivery stopped", { error: err });
          }
        } while (this.#again);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** One pass: sends what is due, in order, until nothing is due, the budget is spent, the breaker opens or the webhook is unusable. */
  async drain(): Promise<DrainReport> {
    const { queue, client, webhook, breaker, log } = this.#o;
    const started = this.#now();
    const deadline = started + this.#o.limits.ALERT_DRAIN_BUDGET_MS;
    const report: DrainReport = {
      sent: 0,
      deferred: 0,
      retried: 0,
      dead: 0,
      stopped: "empty",
      remaining: 0,
      durationMs: 0,
    };
    for (;;) {
      const left = deadline - this.#now();
      if (left <= 0) {
        report.stopped = "budget";
        break;
      }
      const alert = await queue.claim();
      if (!alert) {
        const due = await queue.nextDueInMs();
        if (due === null) break; // empty
        if (due >= left) {
          report.stopped = "waiting";
          break;
        }
        await this.#sleep(Math.max(due, 5));
        continue;
      }
      const permit = await webhook.acquire();
      if (!permit.granted) {
        await queue.release(alert);
        if (permit.unusableReason !== null) {
          report.stopped = "webhook_unusable";
          break;
        }
        if (permit.waitMs >= deadline - this.#now()) {
          report.stopped = "budget";
          break;
        }
        await this.#sleep(permit.waitMs);
        continue;
      }
      const content = renderAlert(alert);
      let sent: Awaited<ReturnType<DiscordClient["execute"]>>;
      try {
        sent = await breaker.run(() => client.execute(content));
      } catch (err) {
        if (err instanceof CircuitOpen) {
          await queue.release(alert);
          report.stopped = "circuit_open";
          break;
        }
        if (err instanceof DiscordRateLimited) {
          await webhook.observe({
            outcome: "rate_limited",
            rateLimit: err.rateLimit,
            retryAfterMs: err.retryAfterMs,
            global: err.global,
          });
          await queue.release(alert);
          report.deferred++;
          continue;
        }
        if (err instanceof DiscordRejected && err.webhookGone) {
          // The webhook, not this message: keep every alert, stop sending for the fleet.
          const health = await webhook.observe({
            outcome: "gone",
            rateLimit: err.rateLimit,
            reason: err.message,
          });
          await queue.release(alert);
          if (health.becameUnusable) {
            log.error("Discord webhook unusable; alerts are kept queued until it works again", {
              reason: err.message,
              probe: permit.probe,
            });
          }
          report.stopped = "webhook_unusable";
          break;
        }
        if (err instanceof DiscordRejected) {
          await webhook.observe({
            outcome: "rejected",
            rateLimit: err.rateLimit,
            reason: err.message,
          });
          await queue.markDead(alert, err.message);
          log.error("alert refused by Discord; dead-lettered", {
            alertId: alert.id,
            reason: err.message,
          });
          report.dead++;
          continue;
        }
        if (err instanceof UpstreamUnavailable) {
          await webhook.observe({ outcome: "failed", reason: err.message });
          const state = await queue.markFailed(alert, err.message);
          if (state === "dead") {
            log.error("alert undeliverable; dead-lettered", {
              alertId: alert.id,
              reason: err.message,
            });
            report.dead++;
          } else {
            report.retried++;
          }
          continue;
        }
        await queue.release(alert).catch(() => {});
        throw err;
      }
      await this.#recordSent(alert, sent.id);
      report.sent++;
      const health = await webhook.observe({ outcome: "sent", rateLimit: sent.rateLimit });
      if (health.recovered) {
        log.warn("Discord webhook works again; delivering the alerts kept for it");
      }
    }
    if (
      report.stopped === "webhook_unusable" || report.stopped === "circuit_open" ||
      report.retried > 0
    ) {
      await this.#escalate().catch((err) =>
        log.error("could not check whether Discord delivery is broken", { error: err })
      );
    }
    this.#purgeIfDue();
    report.remaining = (await queue.stats()).queued;
    report.durationMs = this.#now() - started;
    return report;
  }

  /**
   * Discord delivery is broken (the webhook unusable, or failing for ALERT_FALLBACK_AFTER_SECONDS):
   * tell the fallback channel once per kind per cooldown, and hand it the queued critical alerts.
   */
  async #escalate(): Promise<void> {
    const { webhook, queue, fallback, log, limits } = this.#o;
    const state = await webhook.status();
    if (!state) return;
    const failingMs = state.failingSince ? this.#now() - Date.parse(state.failingSince) : 0;
    const failingLong = failingMs >= limits.ALERT_FALLBACK_AFTER_SECONDS * 1000;
    if (state.usable && !failingLong) return;
    const queued = (await queue.stats()).queued;
    const [kind, notice] = state.usable
      ? [
        "discord-failing",
        `Discord alert delivery is broken: failing since ${state.failingSince} (${
          state.lastError ?? "no answer"
        }). ${queued} alert(s) wait in the queue and go out once Discord answers again.`,
      ]
      : [
        "discord-unusable",
        `Discord alert delivery is broken: the webhook is unusable since ${state.unusableSince} (${state.unusableReason}). ${queued} alert(s) are kept in the queue and go out once the webhook works again; it is retried at ${state.nextProbeAt}.`,
      ];
    log.error("Discord alert delivery is broken", {
      kind,
      reason: state.unusableReason ?? state.lastError,
      since: state.unusableSince ?? state.failingSince,
      queued,
    });
    if (!fallback) return;
    await fallback.notify(kind, notice);
    for (const alert of await queue.takeUnforwardedCritical(FORWARD_MAX)) {
      await fallback.notify(
        `critical:${alert.dedupKey ?? alert.title}`,
        `CRITICAL · ${alert.title}\n${alert.message}${
          alert.count > 1 ? `\n(occurred ${alert.count} times)` : ""
        }\n(Discord delivery is broken; this alert is also kept for Discord.)`,
      );
    }
  }

  /** Marks a delivered alert sent, retrying briefly: a row left claimed would be re-sent after its lease. */
  async #recordSent(alert: ClaimedAlert, messageId: string): Promise<void> {
    try {
      await RECORD_SENT.execute(() => this.#o.queue.markSent(alert, messageId));
    } catch (err) {
      this.#o.log.error("alert sent but not recorded; it may be sent again after its lease", {
        alertId: alert.id,
        error: err,
      });
      throw err;
    }
  }

  /** Sleeps `ms`, or less when a kick says new work may be due. */
  async #sleep(ms: number): Promise<void> {
    const woken = new AbortController();
    const wake = () => woken.abort();
    this.#wakers.add(wake);
    try {
      await delay(ms, { signal: woken.signal }).catch(() => {}); // woken early: work may be due
    } finally {
      this.#wakers.delete(wake);
    }
  }
}
