import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { everyAtMost } from "../../../shared/resilience/housekeeping.ts";

Deno.test("everyAtMost() runs on the first call, then no sooner than its interval after the last start", async () => {
  let t = 1_000;
  let runs = 0;
  const tick = everyAtMost(100, () => void runs++, { now: () => t });
  await tick();
  assertEquals(runs, 1);
  t = 1_099;
  assertEquals(tick(), undefined, "not due yet");
  t = 1_100;
  await tick();
  assertEquals(runs, 2);
  t = 5_000; // a long quiet spell: one run, not one per missed interval
  await tick();
  assertEquals(tick(), undefined);
  assertEquals(runs, 3);
});

Deno.test("everyAtMost() never starts a run while the previous one is still going", async () => {
  let t = 0;
  let running = 0;
  let most = 0;
  let finish!: () => void;
  const tick = everyAtMost(10, async () => {
    most = Math.max(most, ++running);
    await new Promise<void>((r) => (finish = r));
    running--;
  }, { now: () => t });
  const first = tick();
  assert(first, "the first call starts a run");
  t = 1_000; // long overdue, but the first run has not finished
  assertEquals(tick(), undefined);
  assertEquals(tick(), undefined);
  finish();
  await first;
  const second = tick();
  assert(second, "due and idle: runs again");
  finish();
  await second;
  assertEquals(most, 1);
});

Deno.test("everyAtMost() with firstAtRandom waits a random part of the first interval", async () => {
  let t = 0;
  let runs = 0;
  const tick = everyAtMost(1_000, () => void runs++, {
    now: () => t,
    random: () => 0.25,
    firstAtRandom: true,
  });
  assertEquals(tick(), undefined, "the first run falls 250 ms in, not on the first call");
  t = 249;
  assertEquals(tick(), undefined);
  t = 250;
  await tick();
  assertEquals(runs, 1);
});

Deno.test("everyAtMost() passes a failed run's error to the caller and keeps its schedule", async () => {
  let t = 0;
  let calls = 0;
  const tick = everyAtMost(10, () => {
    calls++;
    throw new Error("purge failed");
  }, { now: () => t });
  await assertRejects(() => tick()!, Error, "purge failed");
  assertEquals(tick(), undefined, "a failure does not make the next run due early");
  t = 10;
  await assertRejects(() => tick()!, Error, "purge failed");
  assertEquals(calls, 2);
});

Deno.test("everyAtMost() refuses an interval that is not a positive number", () => {
  for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assertThrows(() => everyAtMost(bad, () => {}), RangeError, "interval");
  }
});
