/**
 * Backtests a user may run at once, across instances (issue 25, finding 3: ten concurrent
 * hundred-year backtests of one user took 17 s of CPU and slowed everyone's answers). Each run
 * holds one of the user's `max` slots in internal.backtest_slots for at most its deadline; a
 * user holding all of them gets `429 BACKTESTS_BUSY` with Retry-After, before anything is read.
 * The state is in Postgres (it must hold across instances); a slot costs one statement to take
 * and one to give back, and a lease left by an instance that died expires with the deadline.
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { backtestSlots } from "./backtest_slots.ts";
 *
 * declare const db: Database;
 * const slots = backtestSlots({ db, max: 2, leaseMs: 30_000, applies: () => true, owner: () => "u" });
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Database } from "../../shared/db/db.ts";
import { HttpError } from "../../shared/errors.ts";

export interface BacktestSlotOptions {
  db: Database;
  /** Runs one user may have at once (`TOOLS_BACKTEST_CONCURRENCY`). */
  max: number;
  /** How long a slot is held at most: the run's deadline, plus a margin. */
  leaseMs: number;
  /** Whether the request is a run that needs a slot. */
  applies: (c: Context) => boolean;
  /** The user the slot is counted for. */
  owner: (c: Context) => string;
}

/** All of a user's slots are taken. */
export class BacktestsBusy extends HttpError {
  constructor(max: number) {
    super(
      429,
      "BACKTESTS_BUSY",
      `At most ${max} backtests run at once per user; wait for one to finish.`,
      { headers: { "retry-after": "1" } },
    );
  }
}

/** The guard: takes a slot around the rest of the chain, or refuses. */
export function backtestSlots(opts: BacktestSlotOptions): MiddlewareHandler {
  const { db, max, leaseMs } = opts;
  return async function holdBacktestSlot(c, next) {
    if (!opts.applies(c)) return await next();
    const user = opts.owner(c);
    const lease = crypto.randomUUID();
    // The lowest free slot (none held, or its lease expired), taken in one statement. Two runs
    // racing for the same slot: one takes it, the other finds the conflict and is refused, which
    // errs on the side of fewer runs.
    const [taken] = await db.query((sql) =>
      sql<{ slot: number }[]>`
        insert into internal.backtest_slots (user_id, slot, lease, expires_at)
        select ${user}, s, ${lease}::uuid, now() + ${leaseMs}::float8 * interval '1 millisecond'
        from generate_series(1, ${max}::int) s
        where not exists (select 1 from internal.backtest_slots b
          where b.user_id = ${user} and b.slot = s and b.expires_at > now())
        order by s limit 1
        on conflict (user_id, slot) do update
          set lease = excluded.lease, expires_at = excluded.expires_at
          where internal.backtest_slots.expires_at <= now()
        returning slot`
    );
    if (!taken) throw new BacktestsBusy(max);
    try {
      await next();
    } finally {
      await db.query((sql) =>
        sql`delete from internal.backtest_slots
          where user_id = ${user} and slot = ${taken.slot} and lease = ${lease}::uuid`
      ).catch(() => {/* the lease expires by itself */});
    }
  };
}
