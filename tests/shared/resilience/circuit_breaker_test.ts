import { assert, assertEquals, assertLess, assertRejects } from "@std/assert";
import { Breakers } from "../../../shared/resilience/circuit_breaker.ts";
import { CircuitOpen } from "../../../shared/errors.ts";

const settings = { errorPercent: 50, volumeThreshold: 3, windowMs: 10_000, resetMs: 300 };
const failing = () => Promise.reject(new Error("upstream 500"));

Deno.test("a breaker opens after repeated failures and then answers CircuitOpen at once", async () => {
  const breakers = new Breakers(settings);
  const changes: string[] = [];
  breakers.onChange = (name, state) => changes.push(`${name}:${state}`);
  try {
    const b = breakers.get("broker");
    for (let i = 0; i < 3; i++) await assertRejects(() => b.run(failing));
    let calls = 0;
    const started = performance.now();
    const err = await assertRejects(
      () => b.run(() => Promise.resolve(++calls)),
      CircuitOpen,
    ) as CircuitOpen;
    assertLess(
      performance.now() - started,
      500,
      "an open breaker answers at once, it does not wait",
    );
    assertEquals(calls, 0, "an open breaker does not call the upstream");
    assertEquals(err.status, 503);
    assert(Number(err.headers["retry-after"]) >= 1);
    assertEquals(breakers.states()[0].state, "open");
    assertEquals(changes, ["broker:open"]);
  } finally {
    breakers.shutdown();
  }
});

Deno.test("after its reset time one probe goes through and a success closes the breaker", async () => {
  const breakers = new Breakers(settings);
  try {
    const b = breakers.get("market");
    for (let i = 0; i < 3; i++) await assertRejects(() => b.run(failing));
    await new Promise((r) => setTimeout(r, 350));
    assertEquals(await b.run(() => Promise.resolve("ok")), "ok");
    assertEquals(b.state().state, "closed");
  } finally {
    breakers.shutdown();
  }
});

Deno.test("errors marked healthy (a 4xx rejection) never open the breaker", async () => {
  const breakers = new Breakers(settings);
  try {
    class Rejected extends Error {}
    const b = breakers.get("broker", { isHealthy: (e) => e instanceof Rejected });
    for (let i = 0; i < 10; i++) {
      await assertRejects(() => b.run(() => Promise.reject(new Rejected("422"))), Rejected);
    }
    assertEquals(b.state().state, "closed");
  } finally {
    breakers.shutdown();
  }
});
