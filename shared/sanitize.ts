/**
 * Plain text from untrusted input: HTML stripped by DOMPurify (what browsers would render, with
 * scripts, styles and their contents dropped), entities decoded, control characters removed,
 * whitespace collapsed. isomorphic-dompurify loads jsdom (about 400 ms), so it is imported on
 * first use, off every cold-start path.
 *
 * @example
 * await toPlainText("<b>buy</b> <script>x()</script>AAPL &amp; MSFT"); // "buy AAPL & MSFT"
 */

type Purifier = { sanitize(dirty: string, cfg: Record<string, unknown>): unknown };
let purifier: Promise<Purifier> | undefined;

function loadPurifier(): Promise<Purifier> {
  purifier ??= import("isomorphic-dompurify").then((m) => (m.default ?? m) as unknown as Purifier);
  return purifier;
}

/** Strips HTML and control characters; the result is safe to show as text anywhere. */
export async function toPlainText(input: string): Promise<string> {
  let text = input;
  if (/[<&]/.test(text)) {
    const dom = (await loadPurifier()).sanitize(text, {
      ALLOWED_TAGS: [],
      KEEP_CONTENT: true,
      RETURN_DOM: true,
    }) as { textContent: string | null };
    text = dom.textContent ?? "";
  }
  return text.replace(INVISIBLE, "").replace(/[ \t]+/g, " ").trim();
}

/** Control characters (but tab and newlines), zero-width and bidi overrides: invisible tricks. */
const INVISIBLE =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F\u200B-\u200F\u202A-\u202E\u2066-\u2069]/g;
