/**
 * CI's chaos run (issue 26): one fixed seed for about two minutes, two server processes over a
 * throwaway Postgres cluster of their own, the seed's overlapping faults, then the accounting.
 * Server-backed (CI sets TEST_DATABASE_URL; the run makes its own cluster with initdb and
 * pg_ctl, so the shared server is never restarted). A failing invariant fails the test and the
 * message names the seed and the command that replays it.
 */
import { onServer } from "../support/db.ts";
import { runChaos, summaryText } from "../../local/chaos/run.ts";

/** The seed CI runs (change it only with a reason: a new seed is a new schedule). */
export const CI_SEED = 26;
/** Seconds of faults; setup, healing and settling add about a minute. */
export const CI_SECONDS = 75;

Deno.test({
  name:
    `chaos: seed ${CI_SEED}, ${CI_SECONDS} s of overlapping faults over two instances — nothing lost, doubled or stuck`,
  ...onServer,
  // Child processes, a Postgres cluster and timers live across the whole run and are all
  // closed by runChaos itself.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lines: string[] = [];
    const report = await runChaos({
      seed: CI_SEED,
      seconds: CI_SECONDS,
      log: (line) => lines.push(line),
    });
    if (report.failed.length) {
      throw new Error(
        `chaos invariants failed for seed ${report.seed} ` +
          `(replay: npm run chaos -- --seed ${report.seed} --seconds ${report.seconds}):\n` +
          summaryText(report),
      );
    }
    console.log(summaryText(report));
  },
});
