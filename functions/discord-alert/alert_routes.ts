/**
 * discord-alert's routes, as factories over the queue and the drainer, with the guard that
 * validates an alert into `c.var.alert` (Hono's `Variables` pattern).
 *
 * - `POST /` `{severity: info|warning|critical, title, message, dedupKey?}` → `202 {"id",
 *   "coalesced"}`: validated strictly, made plain text (HTML stripped) and inert for Discord (no
 *   mention can ping, no markdown can disguise a link), stored durably in the queue, logged as one
 *   structured line, then delivered in the background. Alerts with the same `dedupKey` within
 *   ALERT_DEDUP_WINDOW_SECONDS become one message that counts them (`coalesced: true` for each one
 *   counted into an earlier one).
 * - `POST /drain` delivers what is queued within ALERT_DRAIN_BUDGET_MS and answers what it did
 *   (`200 {sent, deferred, retried, dead, stopped, remaining, durationMs}`).
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { AlertDrainer } from "../../shared/alerts/alert_drainer.ts";
 * import type { AlertQueue } from "../../shared/alerts/alert_queue.ts";
 * import { createLogger } from "../../shared/logger.ts";
 * import { type AlertVars, drainAlerts, enqueueAlert, validAlert } from "./alert_routes.ts";
 *
 * declare const queue: AlertQueue;
 * declare const drainer: AlertDrainer;
 * const app = new Hono<AlertVars>();
 * const background = (work: Promise<unknown>) => void work;
 * app.post("/", validAlert, enqueueAlert({ queue, drainer, log: createLogger(), background }));
 * app.post("/drain", drainAlerts(drainer));
 * ```
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import * as z from "../../shared/zod.ts";
import type { AppEnv } from "../../shared/platform/app.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import type { AlertDrainer } from "../../shared/alerts/alert_drainer.ts";
import type { AlertQueue, NewAlert } from "../../shared/alerts/alert_queue.ts";
import { neutralize } from "../../shared/alerts/discord_text.ts";
import { ValidationFailed } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { toPlainText } from "../../shared/sanitize.ts";
import { readJson } from "../../shared/http/validation.ts";
import { clip } from "../../shared/text.ts";

/** The log level of an alert's structured log line. */
const LOG_LEVEL = { info: "info", warning: "warn", critical: "error" } as const;

/** The alert a service sends. Longer text than Discord shows is accepted and cut on delivery. */
export const AlertBody = z.strictObject({
  severity: z.enum(["info", "warning", "critical"]),
  title: z.string().min(1).max(256),
  message: z.string().min(1).max(16_000),
  dedupKey: z.string().min(1).max(200)
    .regex(/^[\x21-\x7E]+$/, "must be printable ASCII without spaces").optional(),
});

/** A validated alert: as the service sent it, and as it is stored (plain, inert text). */
export interface ValidAlert {
  sent: z.infer<typeof AlertBody>;
  stored: NewAlert;
}

/** What discord-alert's guards give its handlers. */
export type AlertVars = { Variables: AppEnv["Variables"] & { alert: ValidAlert } };

/** The alert body, validated strictly, then made plain text and inert for Discord. */
export const validAlert = createMiddleware<AlertVars>(async function validAlert(c, next) {
  const sent = await readJson(c, AlertBody);
  // A title is one line: a newline in it could forge lines under the severity badge.
  const title = neutralize(oneLine(await toPlainText(sent.title)));
  if (!title) {
    throw new ValidationFailed([{ path: "title", message: "has no text once HTML is removed" }]);
  }
  const message = neutralize(await toPlainText(sent.message));
  c.set("alert", {
    sent,
    stored: { severity: sent.severity, title, message, dedupKey: sent.dedupKey },
  });
  await next();
});

/** `text` on one line: every line break (`\r`, `\n`, U+2028, U+2029) becomes one space. */
function oneLine(text: string): string {
  return text.replace(/\s*[\r\n\u2028\u2029]+\s*/g, " ").trim();
}

export interface EnqueueOptions {
  queue: AlertQueue;
  drainer: AlertDrainer;
  log: Logger;
  /** Keeps delivery alive past the `202` (EdgeRuntime.waitUntil). */
  background: Platform["background"];
}

/** `POST /`: stores `c.var.alert`, logs it, and starts delivery in the background. */
export function enqueueAlert({ queue, drainer, log, background }: EnqueueOptions) {
  return async function enqueueAlert(c: Context<AlertVars>): Promise<Response> {
    const { sent, stored } = c.var.alert;
    const { id, coalesced } = await queue.enqueue(stored);
    log[LOG_LEVEL[sent.severity]]("alert", {
      requestId: c.var.requestId,
      alertId: id,
      severity: sent.severity,
      title: clip(sent.title, 256),
      dedupKey: sent.dedupKey,
      coalesced,
    });
    background(drainer.kick());
    return c.json({ id, coalesced }, 202);
  };
}

/** `POST /drain`: one bounded delivery pass, and what it did. */
export function drainAlerts(drainer: AlertDrainer) {
  return async function drainAlerts(c: Context<AlertVars>): Promise<Response> {
    return c.json(await drainer.drain(), 200);
  };
}
