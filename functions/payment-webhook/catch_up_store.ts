/**
 * The catch-up's state in Postgres (`internal.stripe_catch_up`, one row; migration
 * 20261207002000_stripe_catch_up.sql): what it has covered and the scan under way, read in one
 * statement, written in one statement only over the state it was read as (`version`), and which
 * of a page of event ids are already recorded (one read per page, so a run that finds nothing
 * new writes nothing).
 *
 * @example
 * ```ts
 * import type { Database } from "../../shared/db/db.ts";
 * import { knownEventIds, loadCatchUpState, saveCatchUpState } from "./catch_up_store.ts";
 *
 * declare const db: Database;
 * const state = await loadCatchUpState(db);
 * const known = await knownEventIds(db, ["evt_1", "evt_2"]);
 * await saveCatchUpState(db, state, { coveredUntil: 1764633600, scan: null });
 * ```
 */
import type { Database } from "../../shared/db/db.ts";
import { isPostgresText, literal } from "../../shared/db/sql_literal.ts";

/** A scan of Stripe's list for one fixed `created` window, newest first. */
export interface Scan {
  /** created[gte], seconds since the epoch. */
  from: number;
  /** created[lte], seconds since the epoch. */
  to: number;
  /** The last (oldest) event id the scan finished; it resumes with starting_after = after. */
  after: string | null;
}

/** The cursor. */
export interface Cursor {
  /** Every event created up to this time (seconds) has been read and recorded; null: never run. */
  coveredUntil: number | null;
  /** The scan under way, when a run stopped at its bound. */
  scan: Scan | null;
}

/** The cursor as read, with what a write needs. */
export interface StoredCursor extends Cursor {
  /** The row's version; null when there is no row yet (the first run). */
  version: number | null;
  checkpointAt: Date | null;
}

interface Row {
  covered_until: Date | null;
  scan_from: Date | null;
  scan_to: Date | null;
  scan_after: string | null;
  checkpoint_at: Date;
  version: string;
}

const seconds = (d: Date | null) => d === null ? null : Math.floor(d.getTime() / 1000);
const time = (s: number | null) => s === null ? null : new Date(s * 1000);

/** The cursor (one statement). */
export async function loadCatchUpState(db: Database): Promise<StoredCursor> {
  const [row] = await db.query((sql) =>
    sql<Row[]>`
      select covered_until, scan_from, scan_to, scan_after, checkpoint_at, version::text
      from internal.stripe_catch_up where id`
  );
  if (!row) return { coveredUntil: null, scan: null, version: null, checkpointAt: null };
  return {
    coveredUntil: seconds(row.covered_until),
    scan: row.scan_from && row.scan_to
      ? { from: seconds(row.scan_from)!, to: seconds(row.scan_to)!, after: row.scan_after }
      : null,
    version: Number(row.version),
    checkpointAt: row.checkpoint_at,
  };
}

/**
 * Writes `next` over `read` (one statement). False when another run wrote first: its state is
 * as true as ours (each says only what its own run read), so ours is dropped rather than
 * moving the cursor back; the next run re-reads at most what this one did.
 */
export async function saveCatchUpState(
  db: Database,
  read: StoredCursor,
  next: Cursor,
): Promise<boolean> {
  const covered = time(next.coveredUntil);
  const from = time(next.scan?.from ?? null);
  const to = time(next.scan?.to ?? null);
  const after = next.scan?.after ?? null;
  // Literals in one simple query: a parameterized statement costs postgres.js a second round
  // trip (it describes the statement before binding) and this is the run's one write.
  const values = `${literal(covered)}::timestamptz, ${literal(from)}::timestamptz, ${
    literal(to)
  }::timestamptz, ${literal(after)}`;
  const statement = read.version === null
    ? `insert into internal.stripe_catch_up (id, covered_until, scan_from, scan_to, scan_after)
       values (true, ${values}) on conflict (id) do nothing returning version`
    : `update internal.stripe_catch_up set (covered_until, scan_from, scan_to, scan_after,
         checkpoint_at, version) = (${values}, now(), version + 1)
       where id and version = ${literal(read.version)} returning version`;
  const rows = await db.query((sql) => sql.unsafe(statement).simple());
  return rows.length === 1;
}

/** Which of `ids` are recorded already (by a webhook or an earlier run); one statement. */
export async function knownEventIds(db: Database, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  // Ids that are not valid text are never stored as they are (effects.ts records a digest).
  const list = ids.filter(isPostgresText).map(literal).join(", ");
  if (!list) return new Set();
  const rows = await db.query((sql) =>
    sql.unsafe<{ id: string }[]>(`select id from internal.stripe_events where id in (${list})`)
      .simple()
  );
  return new Set(rows.map((r) => r.id));
}
