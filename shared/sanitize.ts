/**
 * Plain text from untrusted input: HTML stripped by DOMPurify (what browsers would render, with
 * scripts, styles and their contents dropped), entities decoded until no markup is left,
 * control characters removed, whitespace collapsed. isomorphic-dompurify loads jsdom (about 400 ms), so it is imported on
 * first use, off every cold-start path.
 *
 * @example
 * ```ts
 * import { toPlainText } from "./sanitize.ts";
 *
 * await toPlainText("<b>buy</b> <script>x()</script>AAPL &amp; MSFT"); // "buy AAPL & MSFT"
 * ```
 */

type Purifier = { sanitize(dirty: string, cfg: Record<string, unknown>): unknown };
let purifier: Promise<Purifier> | undefined;

function loadPurifier(): Promise<Purifier> {
  purifier ??= import("isomorphic-dompurify").then((m) => (m.default ?? m) as unknown as Purifier);
  return purifier;
}

/**
 * Strips HTML and control characters; the result is safe to show as text anywhere, and contains
 * no markup however its input was encoded: `toPlainText(toPlainText(x)) === toPlainText(x)`.
 *
 * Why it loops: a browser's text of `&lt;img src=x onerror=…&gt;` is `<img src=x onerror=…>`,
 * live markup again for whoever renders it as HTML; double encoding (`&amp;lt;`) takes two
 * rounds to show. So the purifier runs until its output no longer changes (the text a browser
 * would show of the text is the text itself), at most MAX_PASSES times; input that would need
 * more (three or more layers of encoding, only ever an attack) has its remaining `<` and `&`
 * replaced by their fullwidth forms. Control and zero-width characters go before every pass, so
 * none can hide a tag (`<\u200Bimg …>`) and appear once removed; any `<` still followed by a
 * letter, `/`, `!` or `?` (which a browser's parser left as text, e.g. `a </` at the end) becomes
 * `＜`, so no renderer can read a tag in it either.
 */
export async function toPlainText(input: string): Promise<string> {
  let text = input.replace(INVISIBLE, "");
  let settled = false;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    if (!/[<&]/.test(text)) {
      settled = true;
      break;
    }
    const dom = (await loadPurifier()).sanitize(text, {
      ALLOWED_TAGS: [],
      KEEP_CONTENT: true,
      RETURN_DOM: true,
    }) as { textContent: string | null };
    const next = (dom.textContent ?? "").replace(INVISIBLE, "");
    if (next === text) {
      settled = true;
      break;
    }
    text = next;
  }
  if (!settled) text = text.replaceAll("<", "\uFF1C").replaceAll("&", "\uFF06");
  return text.replace(/[ \t]+/g, " ").trim().replace(TAG_OPEN, "\uFF1C");
}

/** Purifier rounds before the leftovers are neutralized (double encoding settles in three). */
const MAX_PASSES = 4;

/** A `<` that an HTML parser could read as the start of a tag, comment or declaration. */
const TAG_OPEN = /<(?=[A-Za-z\/!?])/g;

/** Control characters (but tab and newlines), zero-width and bidi overrides: invisible tricks. */
const INVISIBLE =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F\u200B-\u200F\u202A-\u202E\u2066-\u2069]/g;
