/**
 * How urgent an alert is. It orders delivery (critical first) and picks the badge an alert
 * carries in Discord; the queue and the renderer share this one definition.
 *
 * @example
 * ```ts
 * import type { Severity } from "./severity.ts";
 *
 * const severity: Severity = "critical";
 * ```
 */

/** An alert's severity, as callers of discord-alert send it. */
export type Severity = "info" | "warning" | "critical";
