/**
 * What an alert looks like in Discord, made safe to show: untrusted plain text neutralized (no
 * mention can ping, no markdown can disguise a link or break the layout), cut to Discord's size
 * limits on code points, and rendered under its severity badge.
 *
 * @example
 * ```ts
 * import { neutralize, renderAlert } from "./discord_text.ts";
 *
 * const content = renderAlert({
 *   severity: "critical",
 *   title: neutralize("Database unavailable"),
 *   message: neutralize("The instance entered fail-safe."),
 *   count: 1,
 * });
 * ```
 */
import type { Severity } from "./severity.ts";
import { clip } from "../text.ts";

/** Discord's message limits (https://discord.com/developers/docs/resources/message#create-message). */
export const DISCORD_LIMITS = {
  /** Characters of `content`. */
  content: 2000,
  embedTitle: 256,
  embedDescription: 4096,
  /** All text of all embeds of a message together. */
  embedTotal: 6000,
} as const;

/** Zero-width space: placed after `@` and `<` it keeps the text readable but never a mention. */
const ZWSP = "\u200B";

/**
 * Makes untrusted plain text inert in a Discord message: `@everyone`, `@here`, `<@id>`, `<@!id>`,
 * `<@&role>`, `<#channel>` (and any other `<…>` markup) get a zero-width space so Discord does not
 * parse them; markdown (`*_~\`|>#[]\`, list markers) is backslash-escaped so `[text](url)` stays
 * literal text and nothing can hide or restyle the rest of the message. Expects the output of
 * `toPlainText` (which also removes any zero-width characters the input brought).
 *
 * @example
 * ```ts
 * import { neutralize } from "./discord_text.ts";
 *
 * neutralize("@everyone [bank](https://evil)"); // "@\u200Beveryone \\[bank\\](https://evil)"
 * ```
 */
export function neutralize(text: string): string {
  return text
    .replace(/[\\*_~`|>#[\]]/g, (ch) => `\\${ch}`)
    .replace(/^(\s*)([-+])(?=\s)/gm, "$1\\$2")
    .replace(/^(\s*)(\d+)\.(?=\s)/gm, "$1$2\\.")
    .replace(/[@<]/g, (ch) => ch + ZWSP)
    .replace(/\n{3,}/g, "\n\n");
}

/** Cuts `text` to at most `max` UTF-16 units, ending with "…" when cut; never splits a surrogate pair. */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return "";
  return clip(text, max - 1).trimEnd() + "…";
}

/** What `renderAlert` needs; `title` and `message` already neutralized (as stored). */
export interface RenderableAlert {
  severity: Severity;
  title: string;
  message: string;
  /** Occurrences this message stands for. */
  count: number;
  /** Set on a follow-up: these occurrences came after the group's message was sent. */
  repeat?: boolean;
  /** When the first of `count` occurred (ms since epoch). */
  firstSeenAt?: number;
}

const BADGE: Record<Severity, string> = {
  critical: "🔴 **CRITICAL**",
  warning: "🟠 **WARNING**",
  info: "🔵 **INFO**",
};

/**
 * The message content of an alert, at most 2000 characters: a severity badge and the title on
 * the first line, the message below (cut with an ellipsis to fit), and how many times it
 * occurred when it stands for more than one alert.
 */
export function renderAlert(alert: RenderableAlert): string {
  const header = `${BADGE[alert.severity]} · ${truncate(alert.title, DISCORD_LIMITS.embedTitle)}`;
  let footer = "";
  if (alert.repeat) {
    footer = `(occurred ${alert.count} more time${
      alert.count === 1 ? "" : "s"
    } since the last message)`;
  } else if (alert.count > 1) {
    const since = alert.firstSeenAt ? ` since <t:${Math.floor(alert.firstSeenAt / 1000)}:T>` : "";
    footer = `(occurred ${alert.count} times${since})`;
  }
  const room = DISCORD_LIMITS.content - header.length - 1 - (footer ? footer.length + 1 : 0);
  const body = truncate(alert.message, room);
  return [header, body, footer].filter(Boolean).join("\n");
}
