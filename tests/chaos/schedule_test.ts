/**
 * The chaos run's nemesis: a seed replays the same schedule, two faults never hold one resource
 * at once, and every fault starts after the warm-up and heals before the run ends.
 */
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { drawSchedule, FAULT_KINDS } from "../../local/chaos/faults.ts";
import { Rng } from "../../local/chaos/prng.ts";

const kinds = FAULT_KINDS.filter((k) => k.name !== "stripe-api-down");

Deno.test("drawSchedule: the same seed draws the same schedule, another seed another", () => {
  const a = drawSchedule(new Rng(26).fork("nemesis"), 120, kinds);
  const b = drawSchedule(new Rng(26).fork("nemesis"), 120, kinds);
  const c = drawSchedule(new Rng(27).fork("nemesis"), 120, kinds);
  assertEquals(a, b);
  assertNotEquals(a, c);
  assert(a.length >= 15, `about one fault per 6 s: ${a.length}`);
});

Deno.test("drawSchedule: faults overlap only on different resources, within the run", () => {
  for (let seed = 0; seed < 200; seed++) {
    const schedule = drawSchedule(new Rng(seed).fork("nemesis"), 90, kinds);
    for (const e of schedule) {
      assert(e.startMs >= 5_000, `seed ${seed}: #${e.n} starts in the warm-up`);
      assert(e.startMs + e.durationMs <= 87_000, `seed ${seed}: #${e.n} outlives the run`);
    }
    for (const x of schedule) {
      for (const y of schedule) {
        if (x.n >= y.n) continue;
        const rx = kinds.find((k) => k.name === x.kind)!.resource(x.target);
        const ry = kinds.find((k) => k.name === y.kind)!.resource(y.target);
        if (rx !== ry) continue;
        const apart = x.startMs + x.durationMs + 1_000 <= y.startMs ||
          y.startMs + y.durationMs + 1_000 <= x.startMs;
        assert(apart, `seed ${seed}: #${x.n} and #${y.n} both hold ${rx}`);
      }
    }
  }
});

Deno.test("Rng: forks are independent streams, each replayable", () => {
  const root = new Rng(7);
  const first = Array.from({ length: 5 }, () => root.fork("load").int(0, 1_000_000));
  assertEquals(new Set(first).size, 1, "the same fork name restarts the same stream");
  const load = root.fork("load");
  const nemesis = root.fork("nemesis");
  assertNotEquals(
    Array.from({ length: 5 }, () => load.next()),
    Array.from({ length: 5 }, () => nemesis.next()),
  );
});
