import { assert, assertEquals, assertThrows } from "@std/assert";
import { Semaphore } from "../../../shared/db/_semaphore.ts";

Deno.test("Semaphore grants its slots at once, then in arrival order as they are released", async () => {
  const slots = new Semaphore(2);
  const a = await slots.acquire(1_000);
  const b = await slots.acquire(1_000);
  assert(a && b);
  assertEquals([slots.busy, slots.waiting], [2, 0]);
  const order: string[] = [];
  const c = slots.acquire(1_000).then((r) => (order.push("c"), r));
  const d = slots.acquire(1_000).then((r) => (order.push("d"), r));
  assertEquals(slots.waiting, 2);
  a();
  a(); // a second release of the same slot gives nothing back
  const rc = await c;
  assertEquals([slots.busy, slots.waiting], [2, 1]);
  b();
  const rd = await d;
  assertEquals(order, ["c", "d"]);
  rc!();
  rd!();
  assertEquals([slots.busy, slots.waiting], [0, 0]);
});

Deno.test("Semaphore answers null when no slot comes free within the wait, and forgets that waiter", async () => {
  const slots = new Semaphore(1);
  const held = await slots.acquire(1_000);
  assertEquals(await slots.acquire(20), null);
  assertEquals(slots.waiting, 0);
  held!();
  assertEquals(slots.busy, 0, "the slot went free, not to the waiter that gave up");
  const again = await slots.acquire(20);
  assert(again, "the slot is free again");
  again();
});

Deno.test("Semaphore refuses a size that is not a positive integer", () => {
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assertThrows(() => new Semaphore(bad), RangeError, "size");
  }
});
