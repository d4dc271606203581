/**
 * Applies `supabase/migrations/*.sql` in file-name order, once each, each in its own transaction,
 * recorded in `internal.schema_migrations`. A transaction-scoped advisory lock makes it safe when
 * several instances start at once: the others wait, then see the file recorded and skip it.
 *
 * @example
 * await migrate(sql, await loadMigrations());
 */
import type { Sql } from "./db.ts";

export interface Migration {
  version: string;
  sql: string;
}

/** Arbitrary constant naming this runner's advisory lock. */
const LOCK_KEY = 7_231_004;

const defaultDir = new URL("../supabase/migrations/", import.meta.url);

/** Reads the migration files, sorted by name. */
export async function loadMigrations(dir: URL = defaultDir): Promise<Migration[]> {
  const out: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".sql")) continue;
    out.push({
      version: entry.name.replace(/\.sql$/, ""),
      sql: await Deno.readTextFile(new URL(entry.name, dir)),
    });
  }
  return out.sort((a, b) => a.version.localeCompare(b.version));
}

/** Applies what is not yet recorded; returns the versions applied by this call. */
export async function migrate(sql: Sql, migrations: Migration[]): Promise<string[]> {
  const applied: string[] = [];
  for (const m of migrations) {
    const done = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      await tx.unsafe(`create schema if not exists internal;
        create table if not exists internal.schema_migrations (
          version text primary key, applied_at timestamptz not null default now())`);
      const [row] = await tx`select 1 from internal.schema_migrations where version = ${m.version}`;
      if (row) return false;
      await tx.unsafe(m.sql);
      await tx`insert into internal.schema_migrations (version) values (${m.version})`;
      return true;
    });
    if (done) applied.push(m.version);
  }
  return applied;
}
