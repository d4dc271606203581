import { assertEquals } from "@std/assert";
import { clip } from "../../shared/text.ts";

Deno.test("clip() never splits a surrogate pair, at any cut, and keeps at most max units", () => {
  const samples = [
    "a\u{1F600}b",
    "\u{1F600}\u{1F600}\u{1F600}",
    "xy\u{1F3F3}\u{FE0F}\u200D\u{1F308}z",
    "plain",
  ];
  for (const text of samples) {
    for (let max = 0; max <= text.length + 1; max++) {
      const cut = clip(text, max);
      assertEquals(cut, cut.toWellFormed(), `${JSON.stringify(text)} at ${max}`);
      assertEquals(text.startsWith(cut), true);
      assertEquals(cut.length <= max, true);
      assertEquals(cut.length >= max - 1 || cut === text, true, "at most one unit less than asked");
    }
  }
  assertEquals(clip("ab\u{1F600}", 3), "ab");
  assertEquals(clip("ab\u{1F600}", 4), "ab\u{1F600}");
});
