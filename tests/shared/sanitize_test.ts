import { assertEquals } from "@std/assert";
import { toPlainText } from "../../shared/sanitize.ts";

Deno.test("toPlainText() strips HTML, drops scripts and decodes entities", async () => {
  assertEquals(
    await toPlainText(
      '<b>buy</b> <script>alert(1)</script><img src=x onerror="alert(2)">AAPL &amp; MSFT',
    ),
    "buy AAPL & MSFT",
  );
  assertEquals(await toPlainText("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2");
});

Deno.test("toPlainText() removes control and bidi characters", async () => {
  assertEquals(await toPlainText("a\u0000b\u202Ec\u200Bd"), "abcd");
});
