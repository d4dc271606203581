import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import { retry } from "../../../shared/resilience/retry.ts";

class Conflict extends Error {}
const isConflict = (err: unknown) => err instanceof Conflict;

/** A policy whose waits are recorded, not slept. */
function recorded(attempts: number, random = () => 0.5) {
  const waits: number[] = [];
  const retried: [number, number][] = [];
  const policy = retry({
    attempts,
    handleWhen: isConflict,
    backoff: { baseMs: 10, capMs: 50 },
    random,
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
    onRetry: (_err, attempt, delayMs) => retried.push([attempt, delayMs]),
  });
  return { policy, waits, retried };
}

Deno.test("retry() re-runs after handled errors with full-jitter waits and returns the first success", async () => {
  const { policy, waits, retried } = recorded(5);
  const seen: number[] = [];
  const answer = await policy.execute((attempt) => {
    seen.push(attempt);
    return attempt < 3 ? Promise.reject(new Conflict()) : Promise.resolve("done");
  });
  assertEquals(answer, "done");
  assertEquals(seen, [0, 1, 2, 3]);
  // Half of windows 10, 20, 40 (capped at 50).
  assertEquals(waits, [5, 10, 20]);
  assertEquals(retried, [[0, 5], [1, 10], [2, 20]]);
});

Deno.test("retry() throws the last handled error once its attempts are used, without a wait after it", async () => {
  const { policy, waits } = recorded(3, () => 0.999);
  let calls = 0;
  const last = new Conflict("third");
  const err = await assertRejects(() =>
    policy.execute(() => {
      calls++;
      return Promise.reject(calls === 3 ? last : new Conflict());
    })
  );
  assertEquals(err, last);
  assertEquals(calls, 3);
  assertEquals(waits, [9, 19]);
});

Deno.test("retry() throws an error its predicate does not handle at once, without retrying", async () => {
  const { policy, waits } = recorded(5);
  let calls = 0;
  await assertRejects(
    () =>
      policy.execute(() => {
        calls++;
        throw new TypeError("a bug, not a conflict");
      }),
    TypeError,
    "a bug",
  );
  assertEquals(calls, 1);
  assertEquals(waits, []);
});

Deno.test("retry() waits on a real timer when no sleep is injected", async () => {
  const policy = retry({ attempts: 2, handleWhen: isConflict, backoff: { baseMs: 5, capMs: 5 } });
  let calls = 0;
  assertEquals(
    await policy.execute(() =>
      ++calls === 1 ? Promise.reject(new Conflict()) : Promise.resolve(calls)
    ),
    2,
  );
});

Deno.test("retry() refuses a policy without attempts or with a negative backoff", () => {
  const ok = { attempts: 1, handleWhen: isConflict, backoff: { baseMs: 1, capMs: 1 } };
  assertThrows(() => retry({ ...ok, attempts: 0 }), RangeError, "attempts");
  assertThrows(() => retry({ ...ok, attempts: 2.5 }), RangeError, "attempts");
  assertThrows(() => retry({ ...ok, backoff: { baseMs: -1, capMs: 1 } }), RangeError, "backoff");
});
