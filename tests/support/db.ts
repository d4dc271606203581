/**
 * Real Postgres for tests: a fresh database on the server named by `TEST_DATABASE_URL` (or
 * `SUPABASE_DB_URL`) when set, else a fresh embedded PGlite in a temporary folder. Tests that
 * need concurrency, locking or network faults run only on the server (`onServer`).
 */
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { startEmbedded } from "../../local/embedded_db.ts";

/** The admin URL of the Postgres server, when tests have one. */
export const SERVER_URL = Deno.env.get("TEST_DATABASE_URL") ?? Deno.env.get("SUPABASE_DB_URL");

/** `ignore` for tests that need the server (concurrency, locks, faults, several processes). */
export const onServer = { ignore: !SERVER_URL };

export interface TestDatabase {
  url: string;
  kind: "server" | "embedded";
  /** Drops the database (server) or closes and removes the embedded one. */
  close(): Promise<void>;
}

let template: Promise<string> | undefined;

/** An initialized, empty PGlite folder, made once per test process (initdb takes seconds). */
function embeddedTemplate(): Promise<string> {
  template ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "pglite-template-" });
    const pg = await PGlite.create(dir);
    await pg.close();
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    return dir;
  })();
  return template;
}

async function copyDir(from: string, to: string) {
  const { success } = await new Deno.Command("cp", { args: ["-a", `${from}/.`, to] }).output();
  if (!success) throw new Error(`Could not copy ${from} to ${to}`);
}

/** A new, empty database. */
export async function freshDatabase(opts: { embedded?: boolean } = {}): Promise<TestDatabase> {
  if (SERVER_URL && !opts.embedded) {
    const name = `t_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const admin = postgres(SERVER_URL, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    await admin.end();
    const url = new URL(SERVER_URL);
    url.pathname = `/${name}`;
    return {
      url: url.toString(),
      kind: "server",
      async close() {
        const admin = postgres(SERVER_URL!, { max: 1, onnotice: () => {} });
        await admin.unsafe(`drop database if exists ${name} with (force)`);
        await admin.end();
      },
    };
  }
  const dir = await Deno.makeTempDir({ prefix: "pglite-test-" });
  await copyDir(await embeddedTemplate(), dir);
  const embedded = await startEmbedded(dir);
  return {
    url: embedded.url,
    kind: "embedded",
    async close() {
      await embedded.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
