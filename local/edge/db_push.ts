/**
 * What `supabase db push` does to a hosted project's database, emulated for the edge check and
 * the tests (the CLI itself needs Docker, which this machine lacks): create the history table
 * if missing, refuse when the database records a version the folder lacks, then apply each
 * pending file's statements and its history row in one implicit transaction, as the CLI's batch
 * does. It takes no advisory lock: the CLI takes none either.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { dbPush } from "./db_push.ts";
 * import { loadMigrations } from "../migrate.ts";
 *
 * const sql = postgres("postgres://postgres@127.0.0.1:5432/postgres");
 * const applied = await dbPush(sql, await loadMigrations());
 * await sql.end();
 * ```
 */
import type { Sql } from "../../shared/db/db.ts";
import { HISTORY_TABLE, type Migration } from "../migrate.ts";

/** Applies the pending migrations; returns their versions. */
export async function dbPush(sql: Sql, migrations: Migration[]): Promise<string[]> {
  await sql.unsafe(HISTORY_TABLE);
  const remote = new Set(
    (await sql`select version from supabase_migrations.schema_migrations order by version`)
      .map((r) => r.version as string),
  );
  const local = new Set(migrations.map((m) => m.version));
  const unknown = [...remote].filter((v) => !local.has(v));
  if (unknown.length) {
    throw new Error(
      `Remote migration versions not found in local migrations directory: ${unknown}`,
    );
  }
  const pending = migrations.filter((m) => !remote.has(m.version));
  for (const m of pending) {
    await sql.begin(async (tx) => {
      for (const statement of m.statements) await tx.unsafe(statement);
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements)
        values (${m.version}, ${m.name}, ${m.statements})`;
    });
  }
  return pending.map((m) => m.version);
}
