/**
 * The operator-only part of `status` that other modules contribute: queued alerts, the Discord
 * webhook's delivery state and rate-limit counters. Each entry reads its own module's state;
 * this only gathers them.
 *
 * @example
 * ```ts
 * import type { Platform } from "./platform.ts";
 * import { statusDetails } from "./status_details.ts";
 *
 * declare const platform: Platform; // built at boot by createPlatform()
 * // { alerts: {..., delivery: {...}}, rateLimits: {...} }
 * const details = await statusDetails(platform);
 * ```
 */
import { alertQueueStats } from "../alerts/alert_queue.ts";
import { webhookStatus } from "../alerts/discord_webhook_state.ts";
import type { Platform } from "./platform.ts";
import { ServiceUnavailable } from "../errors.ts";
import { stripeCatchUpStatus } from "./stripe_catch_up_status.ts";

/**
 * `alerts`: the alert queue by state (queued, sending, retrying, dead with the latest reasons,
 * sent in the last hour), and `alerts.delivery`: the Discord webhook as the fleet sees it
 * (usable or why not, failing since when, its bucket), from the database, shared by every
 * instance. `stripeCatchUp`: payment-webhook's catch-up (shared/stripe_catch_up_status.ts).
 * `rateLimits`: this instance's allowed/limited counts per policy.
 */
export async function statusDetails(platform: Platform): Promise<Record<string, unknown>> {
  let alerts: unknown;
  try {
    alerts = {
      ...await alertQueueStats(platform.db),
      delivery: await webhookStatus(platform.db),
    };
  } catch (err) {
    // The database went away between status's ping and this read: say so, keep the rest.
    if (!(err instanceof ServiceUnavailable)) throw err;
    alerts = { unavailable: err.code };
  }
  let stripeCatchUp: unknown;
  try {
    stripeCatchUp = await stripeCatchUpStatus(platform.db);
  } catch (err) {
    if (!(err instanceof ServiceUnavailable)) throw err;
    stripeCatchUp = { unavailable: err.code };
  }
  return { alerts, stripeCatchUp, rateLimits: Object.fromEntries(platform.rateLimits) };
}
