/**
 * The local server's migrations runner: applies `supabase/migrations/*.sql` in version order, once
 * each, each file in its own transaction, and records it in
 * `supabase_migrations.schema_migrations (version, name, statements)` exactly as the Supabase
 * CLI's `supabase db push` does, so a database migrated by either is never migrated twice.
 * A transaction-scoped advisory lock makes it safe when several local servers start at once: the
 * others wait, then see the version recorded and skip it.
 *
 * Local only: a deployed function never runs DDL (shared/db/db.ts checks the version instead).
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { loadMigrations, migrate } from "./migrate.ts";
 *
 * const sql = postgres("postgres://postgres@127.0.0.1:5432/postgres");
 * const applied = await migrate(sql, await loadMigrations()); // the versions it applied
 * await sql.end();
 * ```
 */
import type { Sql, Tx } from "../shared/db/db.ts";

export interface Migration {
  /** The file name's leading digits (the CLI's version). */
  version: string;
  /** The rest of the file name, without `.sql` (the CLI's name). */
  name: string;
  /** The file's statements, split as the CLI records them. */
  statements: string[];
}

/** Arbitrary constant naming this runner's advisory lock. */
const LOCK_KEY = 7_231_004;

const defaultDir = new URL("../supabase/migrations/", import.meta.url);

/** The CLI's file-name rule: `<digits>_<name>.sql`. */
const FILE = /^(\d+)_(.*)\.sql$/;

/** Reads the migration files, sorted by version. */
export async function loadMigrations(dir: URL = defaultDir): Promise<Migration[]> {
  const out: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = entry.isFile ? FILE.exec(entry.name) : null;
    if (!m) continue;
    const text = await Deno.readTextFile(new URL(entry.name, dir));
    out.push({ version: m[1], name: m[2], statements: splitStatements(text) });
  }
  return out.sort((a, b) => a.version.localeCompare(b.version));
}

/** The table the CLI keeps, created as the CLI creates it (idempotent). */
export const HISTORY_TABLE = `
  create schema if not exists supabase_migrations;
  create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
  alter table supabase_migrations.schema_migrations add column if not exists statements text[];
  alter table supabase_migrations.schema_migrations add column if not exists name text;`;

/** Applies what is not yet recorded; returns the versions applied by this call. */
export async function migrate(sql: Sql, migrations: Migration[]): Promise<string[]> {
  const applied: string[] = [];
  for (const m of migrations) {
    const done = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      await tx.unsafe(HISTORY_TABLE);
      await adoptLegacyHistory(tx);
      const [row] =
        await tx`select 1 from supabase_migrations.schema_migrations where version = ${m.version}`;
      if (row) return false;
      for (const statement of m.statements) await tx.unsafe(statement);
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements)
        values (${m.version}, ${m.name}, ${m.statements})`;
      return true;
    });
    if (done) applied.push(m.version);
  }
  return applied;
}

/**
 * Databases migrated by earlier versions of this runner recorded `<version>_<name>` in
 * `internal.schema_migrations`; those versions count as applied (a developer's `.data/`).
 */
async function adoptLegacyHistory(tx: Tx): Promise<void> {
  const [legacy] = await tx`select to_regclass('internal.schema_migrations') is not null as found`;
  if (!legacy.found) return;
  await tx.unsafe(`
    insert into supabase_migrations.schema_migrations (version, name, statements)
    select split_part(version, '_', 1), substr(version, length(split_part(version, '_', 1)) + 2), '{}'
    from internal.schema_migrations
    on conflict (version) do nothing;
    drop table internal.schema_migrations;`);
}

/**
 * Splits a SQL file into statements at top-level semicolons, as the CLI does before recording
 * them: semicolons inside quotes, quoted identifiers, dollar-quoted bodies and comments do not
 * split. Written by hand because no npm package splits PostgreSQL with dollar quoting correctly
 * and small enough to ship; the migrations' own tests cover each case it handles.
 */
export function splitStatements(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  const push = (end: number) => {
    const statement = text.slice(start, end).trim();
    if (statement && !/^(--[^\n]*\n?|\s|\/\*[\s\S]*?\*\/)*$/.test(statement)) out.push(statement);
  };
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i, i + 2);
    if (rest === "--") {
      const nl = text.indexOf("\n", i);
      i = nl === -1 ? text.length : nl + 1;
    } else if (rest === "/*") {
      const end = text.indexOf("*/", i + 2);
      i = end === -1 ? text.length : end + 2;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < text.length) {
        if (text[j] === c && text[j + 1] === c) j += 2;
        else if (text[j] === c) break;
        else j++;
      }
      i = j + 1;
    } else if (c === "$") {
      const tag = /^\$[A-Za-z_]*\$/.exec(text.slice(i))?.[0];
      if (tag) {
        const end = text.indexOf(tag, i + tag.length);
        i = end === -1 ? text.length : end + tag.length;
      } else i++;
    } else if (c === ";") {
      push(i);
      i++;
      start = i;
    } else i++;
  }
  push(text.length);
  return out;
}
