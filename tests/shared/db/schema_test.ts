/**
 * Missing schema is not an outage: a database without the migration the code needs answers
 * SCHEMA_OUTDATED (never DB_UNAVAILABLE), and the gate opens by itself once the migration arrives.
 * And the migrations runner records what it applies as the Supabase CLI does.
 */
import { databaseSettings } from "../../../shared/platform/platform.ts";
import postgres from "postgres";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { classifyDbError, Database } from "../../../shared/db/db.ts";
import { DatabaseUnavailable, SchemaOutdated } from "../../../shared/errors.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { SCHEMA_VERSION } from "../../../shared/db/schema_version.ts";
import { loadMigrations, migrate, splitStatements } from "../../../local/migrate.ts";
import { newestMigration } from "../../../local/schema_version.ts";
import { dbPush } from "../../../local/edge/supabase_cli.ts";
import { freshDatabase, isEmbeddedUrl } from "../../support/db.ts";
import { FAST_LIMITS } from "../../support/env.ts";

function openDb(url: string, requiredVersion = SCHEMA_VERSION) {
  return new Database({
    url,
    serial: isEmbeddedUrl(url),
    requiredVersion,
    ...databaseSettings(parseLimits({ ...FAST_LIMITS, DB_SCHEMA_RECHECK_MS: "200" })),
  });
}

Deno.test("SCHEMA_VERSION is the newest migration in supabase/migrations (run deno task schema:version)", async () => {
  assertEquals(SCHEMA_VERSION, await newestMigration());
});

Deno.test("a missing table, function or schema is classified as schema, never as a connection failure", () => {
  for (const code of ["42P01", "42883", "3F000"]) assertEquals(classifyDbError({ code }), "schema");
  for (const code of ["08006", "57P01", "ECONNREFUSED"]) {
    assertEquals(classifyDbError({ code }), "connection");
  }
});

Deno.test("a database without the migrations answers SCHEMA_OUTDATED naming the version, then serves once they arrive, without a restart", async () => {
  const t = await freshDatabase();
  const db = openDb(t.url);
  const admin = postgres(t.url, { max: 1, onnotice: () => {} });
  try {
    await db.start();
    assertEquals(db.up, false);
    const err = await assertRejects(() => db.ping(), SchemaOutdated) as SchemaOutdated;
    assertEquals(err.status, 503);
    assert(err.message.includes(SCHEMA_VERSION), err.message);
    assertEquals(db.health().state, "schema_outdated");
    assertEquals(db.health().missingMigration, SCHEMA_VERSION);
    assertEquals(db.health().failures, 0, "no connection failure was counted");
    // Nothing was created by the function's own database code.
    const [{ n }] =
      await admin`select count(*)::int as n from pg_tables where schemaname = 'public'`;
    assertEquals(n, 0);

    await migrate(admin, await loadMigrations());
    const deadline = Date.now() + 5_000;
    while (!db.up && Date.now() < deadline) {
      await db.ping().catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(db.up, true, "the gate opened by itself once the migration arrived");
    assertEquals(typeof await db.ping(), "number");
  } finally {
    await admin.end();
    await db.close();
    await t.close();
  }
});

Deno.test("a query on a missing table answers SchemaOutdated for that call and leaves the gate open", async () => {
  const t = await freshDatabase();
  const db = openDb(t.url, "");
  try {
    await db.start();
    assert(db.up);
    await assertRejects(() => db.query((sql) => sql`select * from no_such_table`), SchemaOutdated);
    assertEquals(db.up, true);
    await assertRejects(
      () => db.query((sql) => sql`select no_such_function()`),
      SchemaOutdated,
    );
    assertEquals(db.health().failures, 0);
  } finally {
    await db.close();
    await t.close();
  }
});

Deno.test("an unreachable database is DB_UNAVAILABLE, never SCHEMA_OUTDATED", async () => {
  const db = openDb("postgres://nobody@127.0.0.1:1/none");
  try {
    await db.start();
    await assertRejects(() => db.ping(), DatabaseUnavailable);
    assertEquals(db.health().state, "down");
  } finally {
    await db.close();
  }
});

Deno.test("migrations are recorded as the Supabase CLI records them: version, name and statements", async () => {
  const t = await freshDatabase();
  const sql = postgres(t.url, { max: 1, onnotice: () => {} });
  try {
    const migrations = await loadMigrations();
    assertEquals(await migrate(sql, migrations), migrations.map((m) => m.version));
    const rows = await sql`select version, name, statements
      from supabase_migrations.schema_migrations order by version`;
    assertEquals(rows.map((r) => r.version), migrations.map((m) => m.version));
    assertEquals(rows[0].name, "supabase_roles");
    assert(/^\d{14}$/.test(rows[0].version));
    assert(rows[0].statements.length > 1, "statements are recorded one by one");
  } finally {
    await sql.end();
    await t.close();
  }
});

/** The history rows a database records, in version order. */
async function history(sql: postgres.Sql) {
  return (await sql`select version, name, statements
    from supabase_migrations.schema_migrations order by version`).map((r) => ({ ...r }));
}

Deno.test("the local runner and the real `supabase db push` record the same rows in supabase_migrations.schema_migrations", async () => {
  const [byRunner, byCli] = [await freshDatabase(), await freshDatabase()];
  const runnerSql = postgres(byRunner.url, { max: 1, onnotice: () => {} });
  const cliSql = postgres(byCli.url, { max: 1, onnotice: () => {} });
  try {
    const migrations = await loadMigrations();
    await migrate(runnerSql, migrations);
    await dbPush(byCli.url);
    const rows = await history(cliSql);
    assertEquals(rows.map((r) => r.version), migrations.map((m) => m.version));
    // Version, name and every statement, as the CLI splits and records them.
    assertEquals(await history(runnerSql), rows);
  } finally {
    await Promise.all([runnerSql.end(), cliSql.end()]);
    await Promise.all([byRunner.close(), byCli.close()]);
  }
});

Deno.test("a database migrated by the local server and then by `supabase db push` (and the other way round) is never migrated twice", async () => {
  for (const order of [["local", "push"], ["push", "local"]] as const) {
    const t = await freshDatabase();
    const sql = postgres(t.url, { max: 1, onnotice: () => {} });
    try {
      const migrations = await loadMigrations();
      const all = migrations.map((m) => m.version);
      if (order[0] === "local") {
        assertEquals(await migrate(sql, migrations), all);
        // The CLI applies nothing (re-running a `create policy` would fail with 42710).
        assert(/up to date/i.test(await dbPush(t.url)), "db push finds nothing to apply");
      } else {
        await dbPush(t.url);
        assertEquals(await migrate(sql, migrations), [], "the local runner applies nothing");
      }
      assertEquals((await history(sql)).map((r) => r.version), all, order.join(" then "));
    } finally {
      await sql.end();
      await t.close();
    }
  }
});

Deno.test("splitStatements() splits at top-level semicolons only", () => {
  const text = `-- a comment; not a split
create table a (x text default 'a;b');
create function f() returns int language plpgsql as $$ begin return 1; end $$;
/* block; comment */ select "we;ird" from a;
do $body$ begin perform 1; end $body$`;
  assertEquals(splitStatements(text), [
    "-- a comment; not a split\ncreate table a (x text default 'a;b')",
    "create function f() returns int language plpgsql as $$ begin return 1; end $$",
    '/* block; comment */ select "we;ird" from a',
    "do $body$ begin perform 1; end $body$",
  ]);
});
