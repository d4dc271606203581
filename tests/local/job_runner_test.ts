/**
 * The local scheduler (local/job_runner.ts) on an injected clock: jobs run on their cron
 * schedule, a run that would overlap the previous run of the same job is skipped, an invalid
 * schedule is refused at start, and close() leaves no timer behind.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { createLogger } from "../../shared/logger.ts";
import { JobRunner, type ScheduledJob } from "../../local/job_runner.ts";

const T0 = Date.parse("2026-12-07T10:00:30Z");
const job = (name: string, schedule: string): ScheduledJob => ({
  name,
  schedule,
  path: `/functions/v1/${name}`,
  body: {},
});
const log = createLogger({ write: () => {} });

Deno.test("JobRunner runs each job when its cron time comes, not before", async () => {
  const ran: string[] = [];
  const runner = new JobRunner({
    jobs: [job("every-minute", "* * * * *"), job("every-quarter", "*/15 * * * *")],
    run: (j) => Promise.resolve(void ran.push(j.name)),
    log,
    now: () => T0,
    timers: false,
  });
  try {
    assertEquals(await runner.runDue(T0), { started: [], skipped: [] });
    assertEquals((await runner.runDue(T0 + 30_000)).started, ["every-minute"]); // 10:01:00
    assertEquals((await runner.runDue(T0 + 60_000)).started, []); // 10:01:30: next is 10:02
    assertEquals((await runner.runDue(T0 + 14.5 * 60_000)).started, [
      "every-minute",
      "every-quarter",
    ]); // 10:15:00
    assertEquals(ran, ["every-minute", "every-minute", "every-quarter"]);
  } finally {
    await runner.close();
  }
});

Deno.test("JobRunner skips a run that would overlap the previous run of the same job", async () => {
  let release!: () => void;
  const slow = new Promise<void>((r) => release = r);
  let runs = 0;
  const runner = new JobRunner({
    jobs: [job("slow", "* * * * *")],
    run: () => {
      runs++;
      return slow;
    },
    log,
    now: () => T0,
    timers: false,
  });
  try {
    const first = runner.runDue(T0 + 30_000);
    assertEquals(await runner.runDue(T0 + 90_000), { started: [], skipped: ["slow"] });
    release();
    assertEquals((await first).started, ["slow"]);
    assertEquals((await runner.runDue(T0 + 150_000)).started, ["slow"]);
    assertEquals(runs, 2);
  } finally {
    await runner.close();
  }
});

Deno.test("JobRunner refuses an invalid schedule, naming the job; a failing run does not stop the schedule", async () => {
  assertThrows(
    () => new JobRunner({ jobs: [job("bad", "every minute")], run: () => Promise.resolve(), log }),
    Error,
    "Job bad has an invalid schedule",
  );
  let calls = 0;
  const runner = new JobRunner({
    jobs: [job("flaky", "* * * * *")],
    run: () => {
      calls++;
      return Promise.reject(new Error("503"));
    },
    log,
    now: () => T0,
  });
  try {
    await runner.runDue(T0 + 30_000);
    await runner.runDue(T0 + 90_000);
    assertEquals(calls, 2);
  } finally {
    await runner.close(); // with real timers armed: the leak check fails if one is left
  }
});
