/**
 * Plain text from untrusted input: HTML stripped as DOMPurify strips it (the text a browser would
 * render, with scripts, styles and their contents dropped), entities decoded until no markup is
 * left, control characters removed, whitespace collapsed.
 *
 * Why parse5 and not isomorphic-dompurify: with no tag allowed and contents kept, DOMPurify's
 * output is a spec parser's document with the text of every element but those whose contents it
 * forbids, and on a server its parser is jsdom's, which is parse5. jsdom itself cannot run where
 * the functions are deployed: bundled (`deno bundle`, as the edge check does it), its module
 * setup reads `default-stylesheet.css` through `__dirname` and resolves `xhr-sync-worker.js` from
 * its package folder, neither of which is in a bundle (every alert or order note with markup
 * answered 500 there), and it weighed 11 MB of each bundle. parse5 is the same parser, a plain
 * ES module with no files, no Node built-ins and no DOM; what is written by hand here is the walk
 * over its tree (DOMPurify's rules for this configuration, below). It is imported on first use,
 * off every cold-start path (a note or alert without `<` or `&` never loads it).
 *
 * @example
 * ```ts
 * import { toPlainText } from "./sanitize.ts";
 *
 * await toPlainText("<b>buy</b> <script>x()</script>AAPL &amp; MSFT"); // "buy AAPL & MSFT"
 * ```
 */

import type { DefaultTreeAdapterTypes } from "parse5";

type ParentNode = DefaultTreeAdapterTypes.ParentNode;
type Parse = (html: string) => DefaultTreeAdapterTypes.Document;
let parser: Promise<Parse> | undefined;

function loadParser(): Promise<Parse> {
  // Scripting off, as in jsdom's DOMParser (DOMPurify's parser on a server): `<noscript>` holds
  // markup, not raw text.
  parser ??= import("parse5").then((m) => (html: string) =>
    m.parse(html, { scriptingEnabled: false })
  );
  return parser;
}

/**
 * Elements whose contents go with them: DOMPurify's default `FORBID_CONTENTS` (3.4). Every other
 * element is removed and its contents kept, since no tag is allowed.
 */
const FORBID_CONTENTS = new Set([
  "annotation-xml",
  "audio",
  "colgroup",
  "desc",
  "foreignobject",
  "head",
  "iframe",
  "math",
  "mi",
  "mn",
  "mo",
  "ms",
  "mtext",
  "noembed",
  "noframes",
  "noscript",
  "plaintext",
  "script",
  "selectedcontent",
  "style",
  "svg",
  "template",
  "thead",
  "title",
  "video",
  "xmp",
]);

type ChildNode = DefaultTreeAdapterTypes.ChildNode;
const isText = (n: ChildNode): n is DefaultTreeAdapterTypes.TextNode => n.nodeName === "#text";
const isElement = (n: ChildNode): n is DefaultTreeAdapterTypes.Element => "tagName" in n;

/**
 * DOMPurify's mutation-XSS rule, as it applies here: an element with no element children whose
 * markup (`innerHTML`) and text both hold something like a tag goes with its contents. With no
 * element children, the markup can only hold one through a comment (raw-text elements are
 * forbidden already).
 */
function looksMutated(el: DefaultTreeAdapterTypes.Element): boolean {
  const kids = el.childNodes;
  return kids.length > 0 && !kids.some(isElement) && kids.some((n) => n.nodeName === "#comment") &&
    /<[/\w!]/.test(kids.filter(isText).map((n) => n.value).join(""));
}

/**
 * The text of `html` as DOMPurify leaves it with `ALLOWED_TAGS: []` and `KEEP_CONTENT`: the input
 * parsed as a whole document, then the body's text nodes, in order, outside forbidden elements
 * (comments, doctypes and whatever the parser put in `<head>` are dropped; a frameset document
 * has no body, and no text), after the input's leading whitespace, as DOMPurify keeps it.
 * tests/shared/sanitize_test.ts holds it to DOMPurify over jsdom.
 */
async function textOfHtml(html: string): Promise<string> {
  const document = (await loadParser())(html);
  const root = document.childNodes.find((n) => n.nodeName === "html") as ParentNode | undefined;
  const body = root?.childNodes.find((n) => n.nodeName === "body") as ParentNode | undefined;
  if (!body) return "";
  // Depth first, in document order, with a stack of its own rather than the call stack: a few
  // thousand nested elements (well under an alert's 16,000 characters) overflowed a recursive
  // walk (issue 25, finding 6). Children are pushed last to first, so the first is taken next.
  const out: string[] = [];
  const stack: ChildNode[] = [...body.childNodes].reverse();
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    if (isText(node)) out.push(node.value);
    else if (
      isElement(node) && !FORBID_CONTENTS.has(node.tagName.toLowerCase()) && !looksMutated(node)
    ) {
      for (let i = node.childNodes.length - 1; i >= 0; i--) stack.push(node.childNodes[i]);
    }
  }
  // DOMPurify puts back the whitespace the parser drops before the first tag; without it a pass
  // could differ from DOMPurify's by that whitespace alone, and the loop below settle later.
  return (/^[\r\n\t ]+/.exec(html)?.[0] ?? "") + out.join("");
}

/**
 * Strips HTML and control characters; the result is safe to show as text anywhere, and contains
 * no markup however its input was encoded: `toPlainText(toPlainText(x)) === toPlainText(x)`.
 *
 * Why it loops: a browser's text of `&lt;img src=x onerror=…&gt;` is `<img src=x onerror=…>`,
 * live markup again for whoever renders it as HTML; double encoding (`&amp;lt;`) takes two
 * rounds to show. So the parser runs until its output no longer changes (the text a browser
 * would show of the text is the text itself), at most MAX_PASSES times; input that would need
 * more (three or more layers of encoding, only ever an attack) has its remaining `<` and `&`
 * replaced by their fullwidth forms. Control, format and default-ignorable characters go before
 * every pass, so none can hide a tag (`<\u200Bimg …>`, `<\u00ADimg …>`) and appear once removed; any `<` still followed by a
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
    const next = (await textOfHtml(text)).replace(INVISIBLE, "");
    if (next === text) {
      settled = true;
      break;
    }
    text = next;
  }
  if (!settled) text = text.replaceAll("<", "\uFF1C").replaceAll("&", "\uFF06");
  return text.replace(/[ \t]+/g, " ").trim().replace(TAG_OPEN, "\uFF1C");
}

/** Parser rounds before the leftovers are neutralized (double encoding settles in three). */
const MAX_PASSES = 4;

/** A `<` that an HTML parser could read as the start of a tag, comment or declaration. */
const TAG_OPEN = /<(?=[A-Za-z\/!?])/g;

/**
 * Invisible characters, by Unicode property rather than a hand list (issue 25, finding 8: the
 * soft hyphen, U+2061, U+FEFF, tag characters, variation selectors… passed and hid tags):
 * controls (`Cc`) but tab and newlines, format characters (`Cf`: zero-width, bidi, tags) and
 * every `Default_Ignorable_Code_Point` (variation selectors, Hangul fillers…), and lone
 * surrogates (`Cs`), which no consumer can show either.
 */
const INVISIBLE = /(?![\t\n\r])[\p{Cc}\p{Cf}\p{Cs}\p{Default_Ignorable_Code_Point}]/gu;
