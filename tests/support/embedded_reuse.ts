/**
 * Reusing an embedded PGlite between the tests of one file: booting a copy of a template costs
 * most of a second of CPU, putting a used one back as it was a tenth of that. After a test,
 * the tables and schemas it created are dropped, the others emptied (TRUNCATE, as new), its
 * sequences restarted and its session reset (DISCARD ALL); then the instance is reused only if
 * nothing else differs from the state it booted in: no catalog row added, changed or removed
 * (created, altered, dropped or granted objects, roles, settings), the same settings, sequences,
 * locks and the template's own rows.
 * Anything else, or any error, and it is closed instead, so the next test boots a new copy.
 *
 * PGlite is one session shared by every socket connection, so these checks are what keeps one
 * test's session state (prepared statements, advisory locks, temporary tables, settings) from
 * reaching the next.
 */
import type { PGlite } from "@electric-sql/pglite";

/** The first OID of objects made after initdb (PostgreSQL's FirstNormalObjectId). */
const FIRST_USER_OID = 16384;

/** pg_class fields that change without the object changing (storage, statistics, freezing). */
const VOLATILE_CLASS_FIELDS = [
  "relfilenode",
  "relpages",
  "reltuples",
  "relallvisible",
  "relallfrozen",
  "relfrozenxid",
  "relminmxid",
];

/** Catalogs whose content is data or statistics, not definitions. */
const NOT_DEFINITIONS = new Set(["pg_statistic", "pg_statistic_ext_data", "pg_largeobject"]);

/** Rows of a catalog that belong to a session (temporary schemas), not to the database. */
const SESSION_ROWS: Record<string, string> = {
  pg_namespace: "nspname !~ '^pg_(toast_)?temp_'",
};

/** The tables a test may fill: ordinary tables outside the system schemas. */
const USER_TABLES = `
  select c.oid::regclass::text as name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind = 'r' and c.relpersistence <> 't'
    and n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'`;

/** What must be as it was for an instance to be reused. */
interface State {
  /** Each catalog's row count and how many of its rows were written since the boot. */
  catalogs: string;
  /** pg_class rows written since the boot (TRUNCATE gives tables new storage), by OID. */
  classes: Map<number, string>;
  settings: string;
  /** Each sequence's last value (null: never used). */
  sequences: Map<number, string | null>;
  /** The template's own rows (e.g. the migrations history), which TRUNCATE leaves alone. */
  kept: string;
  /** Prepared transactions and advisory locks still held. */
  leftovers: string;
}

export interface ReusablePGlite {
  pg: PGlite;
  /** Puts the instance back as it booted; false if it cannot be (then close it). */
  reset(): Promise<boolean>;
}

/** Starts tracking `pg`, freshly booted from a template and not used yet. */
export async function trackFresh(pg: PGlite): Promise<ReusablePGlite> {
  // PL/pgSQL adds its settings once the session first uses it: as the tests will have.
  await pg.exec("do $$ begin end $$");
  await cleanSession(pg);
  const catalogs = (await pg.query<{ relname: string }>(
    `select relname from pg_class
     where relnamespace = 'pg_catalog'::regnamespace and relkind = 'r' order by relname`,
  )).rows.map((r) => r.relname).filter((name) => !NOT_DEFINITIONS.has(name));
  // Transaction ids from here on are the tests'; every catalog row they write carries one.
  const [{ next }] = (await pg.query<{ next: string }>(
    `select pg_snapshot_xmax(pg_current_snapshot())::text as next`,
  )).rows;
  const tables = (await pg.query<{ name: string }>(`${USER_TABLES} order by 1`)).rows
    .map((r) => r.name);
  const filled = new Set(await withRows(pg, tables));
  const kept = tables.filter((name) => filled.has(name));
  const others = tables.filter((name) => !filled.has(name));
  const schemas = new Set(
    (await pg.query<{ oid: number }>(`select oid::int from pg_namespace`)).rows.map((r) => r.oid),
  );
  const read = () => readState(pg, catalogs, next, kept);
  const base = await read();
  // The baseline of the rows written since the boot: the user's pg_class rows as they are now.
  base.classes = await classRows(pg, `oid >= ${FIRST_USER_OID}`);
  return {
    pg,
    async reset() {
      try {
        await cleanSession(pg);
        await dropCreated(pg, next, { schemas, classes: base.classes });
        const used = await withRows(pg, others);
        if (used.length) await pg.exec(`truncate ${used.join(", ")} cascade`);
        await restartSequences(pg, base.sequences);
        return same(base, await read());
      } catch {
        return false;
      }
    },
  };
}

/** Ends what a test's connections left open: a protocol exchange, a transaction, the session. */
async function cleanSession(pg: PGlite): Promise<void> {
  // Sync ends an extended-protocol exchange a closed connection left half done.
  await pg.runExclusive(() => pg.execProtocolRaw(Uint8Array.of(0x53, 0, 0, 0, 4)));
  if (pg.isInTransaction()) await pg.exec("rollback");
  await pg.exec("discard all");
}

/**
 * Drops the schemas and tables a test created (its own fixtures): gone, they leave the catalogs
 * as they were, which the check then confirms (any other change, and the instance is not reused).
 */
async function dropCreated(
  pg: PGlite,
  next: string,
  base: { schemas: Set<number>; classes: Map<number, string> },
): Promise<void> {
  const written = `xmin::text::bigint >= ${BigInt(next)}`;
  const schemas = (await pg.query<{ oid: number; name: string }>(
    `select oid::int, quote_ident(nspname) as name from pg_namespace
     where ${written} and ${SESSION_ROWS.pg_namespace}`,
  )).rows.filter((r) => !base.schemas.has(r.oid)).map((r) => r.name);
  if (schemas.length) await pg.exec(`drop schema ${schemas.join(", ")} cascade`);
  const tables = (await pg.query<{ oid: number; name: string }>(
    `select c.oid::int, c.oid::regclass::text as name from pg_class c
     where c.${written} and c.relkind in ('r', 'p') and c.relpersistence <> 't'`,
  )).rows.filter((r) => !base.classes.has(r.oid)).map((r) => r.name);
  if (tables.length) await pg.exec(`drop table ${tables.join(", ")} cascade`);
}

/** Which of `tables` have rows (one query; an error if one was dropped). */
async function withRows(pg: PGlite, tables: string[]): Promise<string[]> {
  if (!tables.length) return [];
  const { rows } = await pg.query<{ name: string }>(
    tables.map((name) => `select ${literal(name)} as name where exists (select from ${name})`)
      .join(" union all "),
  );
  return rows.map((r) => r.name);
}

function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** Sequences back to their values at the boot (setval: no catalog change). */
async function restartSequences(pg: PGlite, base: Map<number, string | null>): Promise<void> {
  for (const [oid, value] of await sequences(pg)) {
    const was = base.get(oid);
    if (was === undefined || was === value) continue;
    if (was === null) {
      await pg.query(
        `select setval(seqrelid, seqstart, false) from pg_sequence where seqrelid = $1`,
        [oid],
      );
    } else {
      await pg.query(`select setval($1, $2::bigint, true)`, [oid, was]);
    }
  }
}

async function sequences(pg: PGlite): Promise<Map<number, string | null>> {
  const { rows } = await pg.query<{ oid: number; value: string | null }>(
    `select c.oid::int, pg_sequence_last_value(c.oid)::text as value
     from pg_class c where c.relkind = 'S' and c.relpersistence <> 't'`,
  );
  return new Map(rows.map((r) => [r.oid, r.value]));
}

async function classRows(pg: PGlite, where: string): Promise<Map<number, string>> {
  const drop = VOLATILE_CLASS_FIELDS.map((f) => `'${f}'`).join(", ");
  const { rows } = await pg.query<{ oid: number; row: string }>(
    `select oid::int, (to_jsonb(c) - array[${drop}])::text as row from pg_class c where ${where}`,
  );
  return new Map(rows.map((r) => [r.oid, r.row]));
}

async function readState(
  pg: PGlite,
  catalogs: string[],
  next: string,
  kept: string[],
): Promise<State> {
  const written = `xmin::text::bigint >= ${BigInt(next)}`;
  const counts = catalogs.map((name) =>
    `select '${name}' as name, count(*) as n,
       count(*) filter (where ${name === "pg_class" ? "false" : written}) as w
     from pg_catalog.${name}${SESSION_ROWS[name] ? ` where ${SESSION_ROWS[name]}` : ""}`
  ).join(" union all ");
  const [{ catalogs: catalogState, settings, leftovers }] = (await pg.query<
    { catalogs: string; settings: string; leftovers: string }
  >(
    `select
       (select string_agg(name || ' ' || n || ' ' || w, ',' order by name) from (${counts}) t)
         as catalogs,
       (select md5(string_agg(name || '=' || coalesce(setting, ''), ',' order by name))
         from pg_settings) as settings,
       (select count(*) from pg_prepared_xacts) || ' '
         || (select count(*) from pg_locks where locktype = 'advisory') as leftovers`,
  )).rows;
  // TRUNCATE leaves the tables that had rows at the boot alone; their rows must be as they were.
  const keptRows = kept.length
    ? (await pg.query<{ md5: string }>(
      kept.map((name) =>
        `select ${literal(name)} || md5(coalesce(string_agg(t::text, ',' order by t::text), ''))
         as md5 from ${name} t`
      ).join(" union all "),
    )).rows.map((r) => r.md5).join(",")
    : "";
  return {
    catalogs: catalogState,
    classes: await classRows(pg, written),
    settings,
    sequences: await sequences(pg),
    kept: keptRows,
    leftovers,
  };
}

function same(base: State, now: State): boolean {
  if (
    now.catalogs !== base.catalogs || now.settings !== base.settings ||
    now.kept !== base.kept || now.leftovers !== base.leftovers
  ) return false;
  for (const [oid, row] of now.classes) if (base.classes.get(oid) !== row) return false;
  if (now.sequences.size !== base.sequences.size) return false;
  for (const [oid, value] of now.sequences) if (base.sequences.get(oid) !== value) return false;
  return true;
}
