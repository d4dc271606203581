/**
 * Realtime: where the database has the `supabase_realtime` publication (every Supabase project),
 * the migrations put `public.orders` in it; where it has none, they run all the same.
 */
import { assertEquals } from "@std/assert";
import postgres from "postgres";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { freshDatabase } from "../../support/db.ts";

Deno.test("the migrations add orders to an existing supabase_realtime publication", async () => {
  const db = await freshDatabase({ migrated: false });
  const sql = postgres(db.url, { max: 1, prepare: false, onnotice: () => {} });
  try {
    await sql.unsafe("create publication supabase_realtime");
    await migrate(sql, await loadMigrations());
    const rows = await sql<{ tablename: string }[]>`
      select tablename from pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public'`;
    assertEquals(rows.map((r) => r.tablename), ["orders"]);
  } finally {
    await sql.end();
    await db.close();
  }
});
