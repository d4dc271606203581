import fc from "fast-check";
import { assert, assertEquals } from "@std/assert";
import { toPlainText } from "../../shared/sanitize.ts";

/** What an HTML parser could start a tag, comment or declaration with. */
const TAG_OPEN = /<[A-Za-z/!?]/;

Deno.test("toPlainText() strips HTML, drops scripts and decodes entities", async () => {
  assertEquals(
    await toPlainText(
      '<b>buy</b> <script>alert(1)</script><img src=x onerror="alert(2)">AAPL &amp; MSFT',
    ),
    "buy AAPL & MSFT",
  );
  assertEquals(await toPlainText("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2");
  assertEquals(await toPlainText("AT&T &copy; R&D"), "AT&T © R&D");
  // A frameset document has no body (the former code read `null.textContent`: a 500).
  assertEquals(await toPlainText("<frameset>framed"), "");
});

Deno.test("toPlainText() removes control and bidi characters", async () => {
  assertEquals(await toPlainText("a\u0000b\u202Ec\u200Bd"), "abcd");
});

Deno.test("toPlainText() never turns entity-encoded markup into live markup", async () => {
  const attacks = [
    "&lt;img src=x onerror=alert(1)&gt;", // the reported one
    "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;", // double encoded
    "&#60;svg onload=alert(1)&#62;", // decimal
    "&#x3C;iframe src=javascript:alert(1)&#x3E;", // hexadecimal
    "&ltimg src=x onerror=alert(1)&gt", // legacy entities without ';'
    "&amp;amp;amp;lt;b&amp;amp;amp;gt;deep&amp;amp;amp;lt;/b&amp;amp;amp;gt;", // four layers
    "<\u200Bimg src=x onerror=alert(1)>", // a zero-width space hiding a tag
    "&lt;&#8203;img src=x onerror=alert(1)&gt;", // one that only appears once decoded
    "note </", // a parser leaves this as text
  ];
  for (const attack of attacks) {
    const out = await toPlainText(attack);
    assert(!TAG_OPEN.test(out), `${JSON.stringify(attack)} gave markup: ${JSON.stringify(out)}`);
    assertEquals(await toPlainText(out), out, `not stable: ${JSON.stringify(attack)}`);
  }
  // The reported note: nothing of the tag is left to render.
  assertEquals(await toPlainText("&lt;img src=x onerror=alert(1)&gt;"), "");
});

/** Pieces of HTML, entities, and the characters parsers treat specially. */
const piece = fc.constantFrom(
  "<",
  ">",
  "&",
  ";",
  "#",
  "lt",
  "gt",
  "amp",
  "&lt;",
  "&gt;",
  "&amp;",
  "&#60;",
  "&#x3c;",
  "&#X3C",
  "&#0;",
  "&#8203;",
  "&#x202e;",
  "img",
  "script",
  "svg",
  "b",
  "/",
  "!",
  "?",
  "--",
  "[CDATA[",
  " ",
  "\t",
  "\n",
  "\r",
  "\u200B",
  "\u0000",
  "\u202E",
  " src=x",
  " onerror=alert(1)",
  '"',
  "'",
  "=",
  "a",
  "é",
  "😀",
  "\uD800",
);

/** Markup-like text, entity-encoded zero to three times. */
const encoded = fc.tuple(
  fc.array(piece, { maxLength: 40 }).map((p) => p.join("")),
  fc.integer({ min: 0, max: 3 }),
).map(([html, layers]) => {
  let s = html;
  for (let i = 0; i < layers; i++) {
    s = s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
  }
  return s;
});

Deno.test("toPlainText() output never holds a tag opener and is stable, whatever the encoding", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(encoded, fc.string({ unit: "binary", maxLength: 200 })),
      async (input) => {
        const out = await toPlainText(input);
        assert(!TAG_OPEN.test(out), `${JSON.stringify(input)} → ${JSON.stringify(out)}`);
        assertEquals(await toPlainText(out), out, `not idempotent for ${JSON.stringify(input)}`);
      },
    ),
    { numRuns: 300 },
  );
});

// ---- the same text as DOMPurify over jsdom -----------------------------------------------------
// shared/sanitize.ts walks parse5's tree by DOMPurify's rules (`ALLOWED_TAGS: []`, `KEEP_CONTENT`)
// because jsdom cannot run in a deployed bundle. Here, where it can, DOMPurify is the oracle: the
// former toPlainText, with DOMPurify over jsdom (isomorphic-dompurify, a test-only import).

const INVISIBLE = /(?![\t\n\r])[\p{Cc}\p{Cf}\p{Cs}\p{Default_Ignorable_Code_Point}]/gu;

/** toPlainText as it was, passes by DOMPurify (a frameset document has no body: no text). */
async function formerToPlainText(input: string): Promise<string> {
  const { default: DOMPurify } = await import("isomorphic-dompurify");
  let text = input.replace(INVISIBLE, "");
  let settled = false;
  for (let pass = 0; pass < 4; pass++) {
    if (!/[<&]/.test(text)) {
      settled = true;
      break;
    }
    const dom = DOMPurify.sanitize(text, {
      ALLOWED_TAGS: [],
      KEEP_CONTENT: true,
      RETURN_DOM: true,
    });
    const next = (dom?.textContent ?? "").replace(INVISIBLE, "");
    if (next === text) {
      settled = true;
      break;
    }
    text = next;
  }
  if (!settled) text = text.replaceAll("<", "\uFF1C").replaceAll("&", "\uFF06");
  return text.replace(/[ \t]+/g, " ").trim().replace(/<(?=[A-Za-z\/!?])/g, "\uFF1C");
}

const TAGS = [
  "b",
  "p",
  "div",
  "table",
  "tr",
  "td",
  "thead",
  "tbody",
  "colgroup",
  "col",
  "caption",
  "select",
  "option",
  "selectedcontent",
  "textarea",
  "title",
  "style",
  "script",
  "noscript",
  "template",
  "svg",
  "math",
  "mi",
  "desc",
  "foreignObject",
  "annotation-xml",
  "mtext",
  "iframe",
  "xmp",
  "plaintext",
  "noembed",
  "noframes",
  "video",
  "audio",
  "form",
  "input",
  "a",
  "img",
  "br",
  "head",
  "body",
  "html",
  "frameset",
  "li",
  "pre",
  "listing",
  "button",
];
/** Tags (open and close), text, entities, comments and other markup, in any order. */
const markup = fc.array(
  fc.oneof(
    fc.constantFrom(...TAGS).map((t) => `<${t}>`),
    fc.constantFrom(...TAGS).map((t) => `</${t}>`),
    fc.constantFrom(
      "text",
      " ",
      "\n",
      "\r\n",
      "\t",
      "é",
      '"',
      "'",
      " a=1",
      " name=attributes",
      "&amp;",
      "&lt;",
      "&lt;b",
      "&gt;",
      "&#60;",
      "&",
      "<",
      ">",
      "<!---->",
      "<!--x-->",
      "-->",
      "<!DOCTYPE html>",
      "<![CDATA[x]]>",
      "<?x?>",
    ),
  ),
  { maxLength: 30 },
).map((p) => p.join(""));

Deno.test("toPlainText() gives what DOMPurify over jsdom gave, for any markup", async () => {
  for (
    const html of [
      "<!---->&lt;b", // a comment beside tag-like text: DOMPurify's mutation-XSS rule
      "<p><!---->&lt;b</p>x",
      "<noscript><p>hi</p></noscript>", // parsed with scripting off, as jsdom does
      "<svg><p>x</p></svg>y", // foreign content broken out of
      "<math><mi><b>z</b></mi></math>",
      "<table><td>a<style>s</style>b",
      "<title>t</title>b", // into <head>: dropped
      "<frameset>f", // no body at all
      "&amp;amp;#8203; &amp;lt;", // settles only if leading whitespace is kept as DOMPurify does
      "<select><option>o<selectedcontent>sc</selectedcontent></option></select>",
    ]
  ) {
    assertEquals(await toPlainText(html), await formerToPlainText(html), JSON.stringify(html));
  }
  await fc.assert(
    fc.asyncProperty(fc.oneof(markup, encoded), async (html) => {
      assertEquals(await toPlainText(html), await formerToPlainText(html), JSON.stringify(html));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("toPlainText() removes every format (Cf) and default-ignorable code point, and none hides a tag", async () => {
  const hidden = /[\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
  let checked = 0;
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    if (!hidden.test(c)) continue;
    checked++;
    assertEquals(await toPlainText(`a${c}b`), "ab", `U+${cp.toString(16)}`);
    const out = await toPlainText(`x<${c}img src=x onerror=alert(1)>y`);
    assertEquals(out, "xy", `U+${cp.toString(16)} inside a tag`);
  }
  assert(checked > 4_000, `${checked} code points`);
  assertEquals(await toPlainText("a\tb\nc"), "a b\nc", "tab and newlines stay text");
});

Deno.test("toPlainText() walks deeply nested markup without overflowing the stack", async () => {
  for (const tag of ["b", "div", "span", "p", "i"]) {
    for (const depth of [5_200, 15_000]) {
      const html = `<${tag}>`.repeat(depth) + "deep" + `</${tag}>`.repeat(depth) + " end";
      assertEquals(await toPlainText(html), "deep end", `${depth} × <${tag}>`);
    }
  }
  const mixed = "<div><span>".repeat(4_000) + "x<b>y</b>z";
  assertEquals(await toPlainText(mixed), "xyz", "document order kept");
});
