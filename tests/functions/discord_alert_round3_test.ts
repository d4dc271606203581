/**
 * discord-alert's validation under issue 25: a title is one line whatever line break it holds,
 * and invisible characters (by Unicode property) cannot hide a tag in a title or a message.
 */
import { Hono } from "hono";
import { assert, assertEquals } from "@std/assert";
import { errorParts } from "../../shared/errors.ts";
import { type AlertVars, validAlert } from "../../functions/discord-alert/alert_routes.ts";

function app() {
  const a = new Hono<AlertVars>();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.post("/", validAlert, (c) => c.json(c.var.alert.stored));
  return a;
}

const post = (body: unknown) =>
  app().fetch(
    new Request("http://fn/", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
  );

Deno.test("an alert title is one line, whatever line break it holds", async () => {
  for (
    const br of ["\n", "\r\n", "\r", "\u2028", "\u2029", "\u0085", "\v", "\f", "<br>", "\n\n\n"]
  ) {
    const res = await post({
      severity: "info",
      title: `Disk full${br}**CRITICAL** forged line`,
      message: "m",
    });
    assertEquals(res.status, 200, JSON.stringify(br));
    const { title } = await res.json();
    assert(
      !/[\r\n\u2028\u2029\u0085\v\f]/.test(title),
      `${JSON.stringify(br)} → ${JSON.stringify(title)}`,
    );
    assert(title.startsWith("Disk full"), title);
  }
  const multi = await (await post({ severity: "info", title: "t", message: "a\nb" })).json();
  assertEquals(multi.message, "a\nb", "a message keeps its lines");
});

Deno.test("invisible characters inside a tag are removed before the markup check: no tag survives in title or message", async () => {
  for (
    const hide of [
      "\u00AD",
      "\u2061",
      "\uFEFF",
      "\u{E0001}",
      "\u{E0041}",
      "\uFE0F",
      "\u{E0100}",
      "\u180E",
      "\u115F",
      "\u3164",
      "\u034F",
      "\u061C",
    ]
  ) {
    const tag = `<${hide}img src=x onerror=alert(1)>`;
    const res = await post({ severity: "info", title: `t ${tag}`, message: `m ${tag}` });
    assertEquals(res.status, 200);
    const { title, message } = await res.json();
    for (const text of [title, message]) {
      assert(!text.includes(hide), `U+${hide.codePointAt(0)!.toString(16)} removed`);
      assert(!/onerror|img/i.test(text), `U+${hide.codePointAt(0)!.toString(16)}: ${text}`);
    }
  }
});
