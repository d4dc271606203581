/**
 * The recovery gate on its own: probes are an injected function, the clock and the jitter are
 * injected, so every transition is driven step by step (no database, no sleeps). Probe base
 * delays are long so its timers never fire during a test; a due probe runs from `assertUp()`.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { RecoveryGate, type RecoveryGateOptions } from "../../../shared/db/_recovery_gate.ts";
import { DatabaseUnavailable, SchemaOutdated } from "../../../shared/errors.ts";

const refused = () => Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });

/** A gate whose probe answers from `outcomes` (an error to throw, or undefined to pass). */
function gate(extra: Partial<RecoveryGateOptions> = {}) {
  const clock = { t: 1_000_000 };
  const outcomes: (Error | undefined)[] = [];
  const events: string[] = [];
  let probes = 0;
  let recycled = 0;
  let release: (() => void) | undefined;
  const g = new RecoveryGate({
    probe: async () => {
      probes++;
      if (release) await new Promise<void>((r) => (release = r));
      const next = outcomes.shift();
      if (next) throw next;
    },
    probeBaseMs: 60_000,
    probeMaxMs: 600_000,
    schemaRecheckMs: 120_000,
    requiredVersion: "20261202000100",
    onConnectionFailure: () => recycled++,
    onStateChange: (state) => events.push(state),
    now: () => clock.t,
    random: () => 0.5,
    ...extra,
  });
  return {
    g,
    clock,
    outcomes,
    events,
    probes: () => probes,
    recycled: () => recycled,
    /**
     * Moves the clock to the next probe's time and makes one call: it is refused with
     * `expected` (the gate is still closed) and starts the due probe, which is let settle.
     */
    async callWhenDue(expected: typeof DatabaseUnavailable | typeof SchemaOutdated) {
      const s = g.status;
      assert(s.state !== "up", "the gate is closed");
      clock.t = s.nextProbeAt;
      assertThrows(() => g.assertUp(), expected);
      await settle();
    },
    /** Makes the next probes wait until `go()`; returns `go`. */
    hold() {
      release = () => {};
      return () => {
        const r = release!;
        release = undefined;
        r();
      };
    },
  };
}

/** Lets a probe started from assertUp() settle. */
const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("RecoveryGate opens on a first good probe without telling anyone (nothing was down)", async () => {
  const { g, events } = gate();
  try {
    assertEquals(g.status.state, "down");
    await g.start();
    assertEquals(g.status, { state: "up" });
    assert(g.up);
    g.assertUp();
    assertEquals(events, []);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate trips once per outage, recycles, says 'down', and answers DatabaseUnavailable with the wait", async () => {
  const { g, clock, events, recycled } = gate();
  try {
    await g.start();
    const err = g.trip(refused());
    assert(err instanceof DatabaseUnavailable);
    // Full jitter of the first window (60 s) at random 0.5.
    assertEquals(err.retryAfterMs, 30_000);
    assertEquals(g.status, {
      state: "down",
      since: clock.t,
      probeFailures: 0,
      nextProbeAt: clock.t + 30_000,
      reported: true,
    });
    g.trip(refused()); // a second call failing in the same outage
    assertEquals(events, ["down"]);
    assertEquals(recycled(), 1);
    assertEquals(g.failures, 2);
    assertEquals(g.lastError, "ECONNREFUSED");
    clock.t += 10_000;
    const e = assertThrows(() => g.assertUp(), DatabaseUnavailable);
    assertEquals((e as DatabaseUnavailable).retryAfterMs, 20_000);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate runs a due probe from assertUp() when its timer did not fire, one at a time, and says 'up'", async () => {
  const { g, clock, events, probes, hold } = gate();
  try {
    await g.start();
    g.trip(refused());
    assertEquals(probes(), 1);
    assertThrows(() => g.assertUp(), DatabaseUnavailable);
    assertEquals(probes(), 1, "not due yet: no probe");
    clock.t += 30_000;
    const go = hold();
    for (let i = 0; i < 5; i++) assertThrows(() => g.assertUp(), DatabaseUnavailable);
    assertEquals(probes(), 2, "five calls while due, one probe");
    go();
    await settle();
    assert(g.up);
    assertEquals(events, ["down", "up"]);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate backs off with growing full-jitter delays while probes fail", async () => {
  const { g, clock, outcomes, recycled, callWhenDue } = gate({ random: () => 0.999999 });
  try {
    await g.start();
    g.trip(refused());
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      const s = g.status;
      assert(s.state === "down");
      waits.push(s.nextProbeAt - clock.t);
      outcomes.push(refused());
      await callWhenDue(DatabaseUnavailable);
    }
    // Windows 60 s, 120 s, 240 s, 480 s, then the 600 s cap.
    assertEquals(waits, [59_999, 119_999, 239_999, 479_999, 599_999]);
    const s = g.status;
    assert(s.state === "down");
    assertEquals(s.probeFailures, 5);
    assertEquals(recycled(), 6, "the trip and every failed probe recycle the pool");
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate: a failing first connection stays down silently; it was never up", async () => {
  const { g, outcomes, events } = gate();
  try {
    outcomes.push(refused());
    await g.start();
    const s = g.status;
    assert(s.state === "down");
    assertEquals(s.probeFailures, 1);
    assertEquals(s.reported, false);
    assertEquals(events, []);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate: a missing migration is schema_outdated, re-checked on a steady jittered interval, then 'up'", async () => {
  const { g, clock, outcomes, events, recycled, callWhenDue } = gate();
  try {
    outcomes.push(new SchemaOutdated("20261202000100", 0));
    await g.start();
    const s = g.status;
    assertEquals(s, {
      state: "schema_outdated",
      missing: "20261202000100",
      nextProbeAt: clock.t + 90_000, // 120 s · (0.5 + 0.5/2)
    });
    const err = assertThrows(() => g.assertUp(), SchemaOutdated);
    assertEquals((err as SchemaOutdated).missing, "20261202000100");
    assertEquals(events, ["schema_outdated"]);
    assertEquals(recycled(), 0, "not an outage: the pool is kept");
    // Still behind at the next re-check: same state, no second event, same steady interval.
    outcomes.push(new SchemaOutdated("20261202000100", 0));
    await callWhenDue(SchemaOutdated);
    assertEquals(g.status, {
      state: "schema_outdated",
      missing: "20261202000100",
      nextProbeAt: clock.t + 90_000,
    });
    assertEquals(events, ["schema_outdated"]);
    await callWhenDue(SchemaOutdated);
    assert(g.up);
    assertEquals(events, ["schema_outdated", "up"]);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate: any other failure of the probe (a migration that fails) names the required version", async () => {
  const { g, outcomes } = gate();
  try {
    outcomes.push(Object.assign(new Error("syntax error"), { code: "42601" }));
    await g.start();
    const s = g.status;
    assert(s.state === "schema_outdated");
    assertEquals(s.missing, "20261202000100");
    assertEquals(g.lastError, "42601");
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate: an outage while schema_outdated is down, and operators hear 'up' when it serves", async () => {
  const { g, outcomes, events, callWhenDue } = gate();
  try {
    outcomes.push(new SchemaOutdated("20261202000100", 0));
    await g.start();
    outcomes.push(refused());
    await callWhenDue(SchemaOutdated);
    const s = g.status;
    assert(s.state === "down");
    assertEquals(s.probeFailures, 1);
    await callWhenDue(DatabaseUnavailable);
    assert(g.up);
    assertEquals(events, ["schema_outdated", "up"]);
  } finally {
    await g.close();
  }
});

Deno.test("RecoveryGate: a probe that succeeds after close() does not open the gate", async () => {
  const { g, hold } = gate();
  const go = hold();
  const started = g.start();
  const closing = g.close();
  go();
  await started;
  await closing;
  assertEquals(g.up, false);
});
