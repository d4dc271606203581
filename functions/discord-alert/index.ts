/**
 * discord-alert: our services' alerts to the operators' Discord channel, every one delivered,
 * none lost, Discord's limits never broken. Service-role JWT only (called by our services and a
 * scheduler, never by browsers). `POST /` queues an alert, `POST /drain` delivers what is queued
 * (alert_routes.ts), for a scheduler (e.g. pg_cron + pg_net every minute), so alerts queued while
 * Discord was down go out.
 *
 * Across instances: Discord's rate-limit bucket and the webhook's health live in Postgres
 * (shared/alerts/discord_webhook_state.ts), so every instance spends one bucket and a deleted webhook
 * (401/403/404) stops delivery for all of them, alerts kept, until a rare probe finds it works.
 * With ALERT_FALLBACK_WEBHOOK_URL (a Slack-style incoming webhook) set, broken Discord delivery
 * and the critical alerts it holds up are told there too (delivery.ts). The queue, ordering and
 * dedup are in shared/alerts/alert_queue.ts, delivery in shared/alerts/alert_drainer.ts; Discord's protocol in
 * shared/alerts/discord_client.ts, and what a message looks like in shared/alerts/discord_text.ts.
 */
import { defineFunction } from "../../shared/platform/app.ts";
import { AlertQueue } from "../../shared/alerts/alert_queue.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/http/body_limit.ts";
import { contentType } from "../../shared/http/content_type.ts";
import { httpUrl } from "../../shared/env.ts";
import { requireJwt } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { type AlertVars, drainAlerts, enqueueAlert, validAlert } from "./alert_routes.ts";
import { alertDrainer } from "./delivery.ts";

const Env = BaseEnv.extend({
  DISCORD_WEBHOOK_URL: httpUrl,
  /** Optional second channel: a Slack-style incoming webhook (`POST {"text": …}`). */
  ALERT_FALLBACK_WEBHOOK_URL: httpUrl.optional(),
});

const discordAlert = defineFunction<typeof Env, AlertVars>({
  name: "discord-alert",
  env: Env,
  browser: false,
  build(app, ctx) {
    const queue = new AlertQueue(ctx.db, ctx.limits);
    const drainer = alertDrainer({ ...ctx, queue });
    const serviceOnly = requireJwt<AlertVars>({ tokens: ctx.tokens, role: "service_role" });
    const { log, background } = ctx;

    route(app, "/", {
      POST: [
        serviceOnly,
        contentType("application/json"),
        bodyLimit(ctx.limits.ALERT_BODY_LIMIT_BYTES),
        validAlert,
        enqueueAlert({ queue, drainer, log, background }),
      ],
    });
    route(app, "/drain", { POST: [serviceOnly, drainAlerts(drainer)] });
  },
});

export default discordAlert;

if (import.meta.main) await serveStandalone(discordAlert);
