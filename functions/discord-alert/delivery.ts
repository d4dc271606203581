/**
 * How discord-alert's queue reaches Discord: the drainer (shared/alerts/alert_drainer.ts) wired to the
 * webhook's fleet-wide bucket and health (shared/alerts/discord_webhook_state.ts), the optional fallback
 * channel (shared/alerts/alert_fallback.ts), Discord's client and the "discord" breaker.
 *
 * @example
 * ```ts
 * import type { Platform } from "../../shared/platform/platform.ts";
 * import { AlertQueue } from "../../shared/alerts/alert_queue.ts";
 * import { alertDrainer } from "./delivery.ts";
 *
 * declare const platform: Platform;
 * const queue = new AlertQueue(platform.db, platform.limits);
 * const config = { DISCORD_WEBHOOK_URL: "https://discord.com/api/webhooks/123/abc" };
 * const drainer = alertDrainer({ ...platform, queue, config });
 * await drainer.drain(); // { sent, deferred, retried, dead, stopped, remaining, durationMs }
 * ```
 */
import type { Platform } from "../../shared/platform/platform.ts";
import { AlertDrainer } from "../../shared/alerts/alert_drainer.ts";
import { AlertFallback } from "../../shared/alerts/alert_fallback.ts";
import type { AlertQueue } from "../../shared/alerts/alert_queue.ts";
import {
  DiscordClient,
  DiscordRateLimited,
  DiscordRejected,
} from "../../shared/alerts/discord_client.ts";
import { DiscordWebhookState } from "../../shared/alerts/discord_webhook_state.ts";

/** What the drainer is built from. */
export type DeliveryContext =
  & Pick<Platform, "db" | "limits" | "log" | "breakers" | "fetch" | "now">
  & {
    queue: AlertQueue;
    config: { DISCORD_WEBHOOK_URL: string; ALERT_FALLBACK_WEBHOOK_URL?: string };
  };

/** The drainer of `ctx.queue`, delivering to `DISCORD_WEBHOOK_URL`. */
export function alertDrainer(ctx: DeliveryContext): AlertDrainer {
  const { db, limits, log, config } = ctx;
  const fallbackUrl = config.ALERT_FALLBACK_WEBHOOK_URL;
  return new AlertDrainer({
    queue: ctx.queue,
    webhook: new DiscordWebhookState(db, { webhookUrl: config.DISCORD_WEBHOOK_URL, limits }),
    fallback: fallbackUrl
      ? new AlertFallback(db, { webhookUrl: fallbackUrl, limits, log, fetch: ctx.fetch })
      : undefined,
    client: new DiscordClient({
      webhookUrl: config.DISCORD_WEBHOOK_URL,
      timeoutMs: limits.DISCORD_TIMEOUT_MS,
      fetch: ctx.fetch,
      now: ctx.now,
    }),
    // A refusal or a 429 says nothing about Discord's health: only 5xx and timeouts count.
    breaker: ctx.breakers.get("discord", {
      isHealthy: (err) => err instanceof DiscordRejected || err instanceof DiscordRateLimited,
    }),
    limits,
    log,
    now: ctx.now,
  });
}
