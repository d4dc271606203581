/**
 * discord-alert: our services' alerts to the operators' Discord channel, every one delivered,
 * none lost, Discord's limits never broken. Service-role JWT only (called by our services and a
 * scheduler, never by browsers).
 *
 * - `POST /` `{severity: info|warning|critical, title, message, dedupKey?}` → `202 {"id", "coalesced"}`:
 *   validated strictly, made plain text (HTML stripped) and inert for Discord (no mention can
 *   ping, no markdown can disguise a link), stored durably in the queue, then delivered in the
 *   background. Alerts with the same `dedupKey` within ALERT_DEDUP_WINDOW_SECONDS become one
 *   message that counts them (`coalesced: true` for each one counted into an earlier one).
 * - `POST /drain` delivers what is queued within ALERT_DRAIN_BUDGET_MS and answers what it did
 *   (`200 {sent, deferred, retried, dead, stopped, remaining, durationMs}`), for a scheduler
 *   (e.g. pg_cron + pg_net every minute), so alerts queued while Discord was down go out.
 *
 * Across instances: Discord's rate-limit bucket and the webhook's health live in Postgres
 * (shared/discord_webhook_state.ts), so every instance spends one bucket and a deleted webhook
 * (401/403/404) stops delivery for all of them, alerts kept, until a rare probe finds it works.
 * With ALERT_FALLBACK_WEBHOOK_URL (a Slack-style incoming webhook) set, broken Discord delivery
 * and the critical alerts it holds up are told there too (shared/alert_fallback.ts). Every
 * alert is also a structured log line.
 *
 * The queue, ordering and dedup are in shared/alert_queue.ts, delivery in
 * shared/alert_drainer.ts; Discord's protocol in shared/discord_client.ts.
 */
import type { MiddlewareHandler } from "hono";
import { z } from "zod";
import { type AppEnv, defineFunction } from "../../shared/app.ts";
import { AlertDrainer } from "../../shared/alert_drainer.ts";
import { AlertFallback } from "../../shared/alert_fallback.ts";
import { AlertQueue } from "../../shared/alert_queue.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import {
  DiscordClient,
  DiscordRateLimited,
  DiscordRejected,
  neutralize,
} from "../../shared/discord_client.ts";
import { DiscordWebhookState } from "../../shared/discord_webhook_state.ts";
import { httpUrl } from "../../shared/env.ts";
import { ValidationFailed } from "../../shared/errors.ts";
import { requireJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { toPlainText } from "../../shared/sanitize.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { readJson } from "../../shared/validation.ts";

const Env = BaseEnv.extend({
  DISCORD_WEBHOOK_URL: httpUrl,
  /** Optional second channel: a Slack-style incoming webhook (`POST {"text": …}`). */
  ALERT_FALLBACK_WEBHOOK_URL: httpUrl.optional(),
});

/** The log level of an alert's structured log line. */
const LOG_LEVEL = { info: "info", warning: "warn", critical: "error" } as const;

/** The alert a service sends. Longer text than Discord shows is accepted and cut on delivery. */
const AlertBody = z.strictObject({
  severity: z.enum(["info", "warning", "critical"]),
  title: z.string().min(1).max(256),
  message: z.string().min(1).max(16_000),
  dedupKey: z.string().min(1).max(200)
    .regex(/^[\x21-\x7E]+$/, "must be printable ASCII without spaces").optional(),
});

const discordAlert = defineFunction({
  name: "discord-alert",
  env: Env,
  browser: false,
  build(app, ctx) {
    const queue = new AlertQueue(ctx.db, ctx.limits);
    const fallbackUrl = ctx.config.ALERT_FALLBACK_WEBHOOK_URL;
    const drainer = new AlertDrainer({
      queue,
      webhook: new DiscordWebhookState(ctx.db, {
        webhookUrl: ctx.config.DISCORD_WEBHOOK_URL,
        limits: ctx.limits,
      }),
      fallback: fallbackUrl
        ? new AlertFallback(ctx.db, {
          webhookUrl: fallbackUrl,
          limits: ctx.limits,
          log: ctx.log,
          fetch: ctx.fetch,
        })
        : undefined,
      client: new DiscordClient({
        webhookUrl: ctx.config.DISCORD_WEBHOOK_URL,
        timeoutMs: ctx.limits.DISCORD_TIMEOUT_MS,
        fetch: ctx.fetch,
        now: ctx.now,
      }),
      // A refusal or a 429 says nothing about Discord's health: only 5xx and timeouts count.
      breaker: ctx.breakers.get("discord", {
        isHealthy: (err) => err instanceof DiscordRejected || err instanceof DiscordRateLimited,
      }),
      limits: ctx.limits,
      log: ctx.log,
      now: ctx.now,
    });
    const serviceOnly: MiddlewareHandler = requireJwt({
      tokens: ctx.tokens,
      role: "service_role",
    });

    route<AppEnv>(app, "/", {
      POST: [
        serviceOnly,
        bodyLimit(ctx.limits.ALERT_BODY_LIMIT_BYTES),
        contentType("application/json"),
        async (c) => {
          const input = await readJson(c, AlertBody);
          const title = neutralize(await toPlainText(input.title));
          if (!title) {
            throw new ValidationFailed([{
              path: "title",
              message: "has no text once HTML is removed",
            }]);
          }
          const message = neutralize(await toPlainText(input.message));
          const { id, coalesced } = await queue.enqueue({
            severity: input.severity,
            title,
            message,
            dedupKey: input.dedupKey,
          });
          ctx.log[LOG_LEVEL[input.severity]]("alert", {
            requestId: c.get("requestId"),
            alertId: id,
            severity: input.severity,
            title: input.title.slice(0, 256),
            dedupKey: input.dedupKey,
            coalesced,
          });
          ctx.background(drainer.kick());
          return c.json({ id, coalesced }, 202);
        },
      ],
    });

    route<AppEnv>(app, "/drain", {
      POST: [serviceOnly, async (c) => c.json(await drainer.drain(), 200)],
    });
  },
});

export default discordAlert;

if (import.meta.main) await serveStandalone(discordAlert);
