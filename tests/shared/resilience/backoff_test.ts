import { assert, assertEquals, assertThrows } from "@std/assert";
import { fullJitter } from "../../../shared/resilience/backoff.ts";

Deno.test("fullJitter stays within [0, min(cap, base·2^attempt))", () => {
  assertEquals(fullJitter(3, 10, 1000, () => 0), 0);
  assertEquals(fullJitter(3, 10, 1000, () => 0.999999), 79);
  assertEquals(fullJitter(20, 10, 1000, () => 0.999999), 999);
});

Deno.test("fullJitter() doubles its window each attempt until the cap, and draws across the whole window", () => {
  const top = (attempt: number) => fullJitter(attempt, 100, 2_000, () => 0.999999);
  assertEquals([0, 1, 2, 3, 4, 5, 30].map(top), [99, 199, 399, 799, 1599, 1999, 1999]);
  // Full jitter, not equal jitter: the low half of the window is reachable too.
  assertEquals(fullJitter(4, 100, 2_000, () => 0.1), 160);
  // An attempt count far past the cap does not overflow into Infinity or NaN.
  assertEquals(fullJitter(10_000, 100, 2_000, () => 0.5), 1000);
  for (let i = 0; i < 200; i++) {
    const d = fullJitter(i % 8, 10, 500);
    assert(Number.isInteger(d) && d >= 0 && d < Math.min(500, 10 * 2 ** (i % 8)), `delay ${d}`);
  }
});

Deno.test("fullJitter() refuses a negative or fractional attempt and a negative base or cap", () => {
  assertThrows(() => fullJitter(-1, 10, 100), RangeError, "attempt");
  assertThrows(() => fullJitter(1.5, 10, 100), RangeError, "attempt");
  assertThrows(() => fullJitter(1, -10, 100), RangeError, "base and cap");
  assertThrows(() => fullJitter(1, 10, Number.NaN), RangeError, "base and cap");
});
