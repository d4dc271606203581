import { assert, assertEquals, assertRejects } from "@std/assert";
import { Breakers } from "../../../shared/resilience/circuit_breaker.ts";
import { CircuitOpen } from "../../../shared/errors.ts";
import { settledWithin } from "../../support/wait.ts";

const settings = { errorPercent: 50, volumeThreshold: 3, windowMs: 10_000, resetMs: 300 };
const failing = () => Promise.reject(new Error("upstream 500"));

Deno.test("a breaker opens after repeated failures and then answers CircuitOpen without calling the upstream or waiting for its reset", async () => {
  const breakers = new Breakers(settings);
  const changes: string[] = [];
  breakers.onChange = (name, state) => changes.push(`${name}:${state}`);
  try {
    const b = breakers.get("broker");
    for (let i = 0; i < 3; i++) await assertRejects(() => b.run(failing));
    let calls = 0;
    // An upstream call that would never answer: only a refusal without a call can settle this.
    const never = () => {
      calls++;
      return new Promise<never>(() => {});
    };
    const err = await settledWithin(
      5_000,
      "a call through the open breaker",
      assertRejects(() => b.run(never), CircuitOpen),
    ) as CircuitOpen;
    assertEquals(calls, 0, "an open breaker does not call the upstream");
    // It answered while open: it did not wait out the reset time for a probe.
    assertEquals(b.state().state, "open");
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
