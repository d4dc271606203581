/**
 * The local server's scheduler (local only: deployed, pg_cron + pg_net run the same jobs): every
 * row of `internal.scheduled_jobs` (the one place the migrations record periodic work: the alert
 * drain, the order sync, the Stripe catch-up…) is run on its cron schedule by POSTing its route
 * on this server with the service-role key, as pg_net does deployed. Schedules are read with
 * croner (a maintained cron library, no hand parsing); a run that would overlap the previous run
 * of the same job is skipped, as pg_cron skips a job still running.
 *
 * The clock is injected and `runDue(at)` is public, so a test runs "the next minute's jobs" at
 * once instead of waiting for it; timers are cleared on `close()`.
 *
 * @example
 * ```ts
 * import { createLogger } from "../shared/logger.ts";
 * import { JobRunner } from "./job_runner.ts";
 *
 * const runner = new JobRunner({
 *   jobs: [{ name: "discord-alert-drain", schedule: "* * * * *", path: "/functions/v1/discord-alert/drain", body: {} }],
 *   run: async (job) => void await fetch(`http://127.0.0.1:54321${job.path}`, { method: "POST" }),
 *   log: createLogger(),
 *   timers: false,
 * });
 * await runner.runDue(Date.now() + 60_000); // every job due within the next minute runs now
 * await runner.close();
 * ```
 */
import { Cron } from "croner";
import type { Logger } from "../shared/logger.ts";

/** A row of `internal.scheduled_jobs`. */
export interface ScheduledJob {
  name: string;
  /** Five-field cron expression (as pg_cron reads it). */
  schedule: string;
  /** The route: `/functions/v1/<function>[/<sub-path>]`. */
  path: string;
  body: unknown;
}

export interface JobRunnerOptions {
  jobs: ScheduledJob[];
  /** One run of a job (POST its route); a rejection is logged, the schedule goes on. */
  run: (job: ScheduledJob) => Promise<void>;
  log: Logger;
  /** Default Date.now. */
  now?: () => number;
  /** Run on real timers (the server); false: only `runDue` runs jobs (tests). Default true. */
  timers?: boolean;
}

/** What one `runDue` did. */
export interface DueRuns {
  started: string[];
  /** Due, but the previous run of the job was still going. */
  skipped: string[];
}

interface Entry {
  job: ScheduledJob;
  cron: Cron;
  next: number | null;
  running: Promise<void> | null;
}

/** The longest single wait: the schedule is re-checked at least this often (clock changes). */
const MAX_WAIT_MS = 60_000;

export class JobRunner {
  readonly #o: JobRunnerOptions;
  readonly #now: () => number;
  readonly #entries: Entry[];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /** Throws when a schedule is not a valid cron expression (naming the job). */
  constructor(opts: JobRunnerOptions) {
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
    const from = new Date(this.#now());
    this.#entries = opts.jobs.map((job) => {
      let cron: Cron;
      try {
        cron = new Cron(job.schedule, { paused: true });
      } catch (err) {
        throw new Error(`Job ${job.name} has an invalid schedule: ${job.schedule}`, { cause: err });
      }
      return { job, cron, next: cron.nextRun(from)?.getTime() ?? null, running: null };
    });
    if (opts.timers ?? true) this.#arm();
  }

  /** The jobs, by name, with their next run time (ms), for logs and tests. */
  get schedule(): { name: string; next: number | null }[] {
    return this.#entries.map((e) => ({ name: e.job.name, next: e.next }));
  }

  /**
   * Starts every job due at `at` (default now) whose previous run is over, and waits for the runs
   * it started. A due job whose previous run is still going is skipped (its next time is kept).
   */
  async runDue(at: number = this.#now()): Promise<DueRuns> {
    const started: string[] = [];
    const skipped: string[] = [];
    const runs: Promise<void>[] = [];
    for (const e of this.#entries) {
      if (this.#closed || e.next === null || e.next > at) continue;
      e.next = e.cron.nextRun(new Date(at))?.getTime() ?? null;
      if (e.running) {
        skipped.push(e.job.name);
        this.#o.log.warn("scheduled job skipped: its previous run is still going", {
          job: e.job.name,
        });
        continue;
      }
      started.push(e.job.name);
      const run = this.#o.run(e.job).catch((error) => {
        this.#o.log.warn("scheduled job failed", { job: e.job.name, error });
      }).finally(() => e.running = null);
      e.running = run;
      runs.push(run);
    }
    await Promise.all(runs);
    return { started, skipped };
  }

  /** Stops the timers and waits for the runs in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await Promise.all(this.#entries.map((e) => e.running));
  }

  #arm(): void {
    if (this.#closed) return;
    const nexts = this.#entries.map((e) => e.next).filter((n): n is number => n !== null);
    if (nexts.length === 0) return;
    const wait = Math.min(Math.max(Math.min(...nexts) - this.#now(), 0), MAX_WAIT_MS);
    this.#timer = setTimeout(() => {
      // Not awaited: a long run must not hold the others back (overlaps are skipped per job).
      void this.runDue();
      this.#arm();
    }, wait);
  }
}

/** The jobs recorded by the migrations (`internal.scheduled_jobs`), by name. */
export const SCHEDULED_JOBS_SQL =
  "select name, schedule, path, body from internal.scheduled_jobs order by name";
