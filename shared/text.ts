/**
 * Cutting text without breaking it. `text.slice(0, n)` counts UTF-16 units and can end between
 * the two halves of a surrogate pair (an emoji): the lone half left behind is not valid text for
 * Postgres (a SQL literal refuses it, issue 25 finding 7: a webhook answered 500 and Stripe
 * retried it for three days), nor for JSON consumers. Every cut of user or upstream text goes
 * through `clip`.
 *
 * @example
 * ```ts
 * import { clip } from "./text.ts";
 *
 * clip("ab😀", 3); // "ab": the emoji is two units, and is not split
 * ```
 */

/** At most `max` UTF-16 units of `text`, cut on a code point boundary (never inside a pair). */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return "";
  const last = text.charCodeAt(max - 1);
  const next = text.charCodeAt(max);
  // A high surrogate at the end whose low half would be cut off: drop it too.
  const splitsPair = last >= 0xd800 && last <= 0xdbff && next >= 0xdc00 && next <= 0xdfff;
  return text.slice(0, splitsPair ? max - 1 : max);
}
