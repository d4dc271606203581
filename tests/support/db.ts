/**
 * Real Postgres for tests: a fresh database on the server named by `TEST_DATABASE_URL` (or
 * `SUPABASE_DB_URL`) when set, else an embedded PGlite in a temporary folder: a copy of a cached
 * template, or one an earlier test of the same file used and that was put back exactly as it
 * booted (embedded_reuse.ts). Tests that need concurrency, locking or network faults run only on
 * the server (`onServer`).
 */
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { openEmbedded, serveEmbedded, startEmbedded } from "../../local/embedded_db.ts";
import { type ReusablePGlite, trackFresh } from "./embedded_reuse.ts";
import { loadMigrations, migrate } from "../../local/migrate.ts";
import { cliInstalled, dbPush } from "../../local/edge/supabase_cli.ts";
import { Database } from "../../shared/db/db.ts";
import { parseLimits } from "../../shared/limits.ts";
import { databaseSettings } from "../../shared/platform/platform.ts";

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

/**
 * Where the embedded templates are kept between test processes (deno test runs each file in its
 * own isolate, and initdb plus the migrations take seconds): `node_modules/.cache`, one folder
 * per key, each made in a temporary folder and renamed into place when complete, so a parallel
 * test process never copies a half-made one.
 */
const CACHE = decodeURIComponent(
  new URL("../../node_modules/.cache/pglite-templates", import.meta.url).pathname,
);
const DAY_MS = 24 * 60 * 60 * 1000;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Removes other keys' folders unused for a day and builds abandoned for an hour. */
async function pruneCache(keep: string): Promise<void> {
  const now = Date.now();
  for await (const entry of Deno.readDir(CACHE)) {
    if (entry.name === keep) continue;
    const path = `${CACHE}/${entry.name}`;
    const age = now - ((await Deno.stat(path).catch(() => null))?.mtime?.getTime() ?? now);
    if (age > (entry.name.startsWith(".building-") ? DAY_MS / 24 : DAY_MS)) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    }
  }
}

/** The cached folder `name`, made by `build` in an empty folder if no process made it yet. */
async function cachedDir(name: string, build: (dir: string) => Promise<void>): Promise<string> {
  const final = `${CACHE}/${name}`;
  if (await exists(final)) {
    const now = new Date();
    await Deno.utime(final, now, now).catch(() => {}); // in use: not pruned
    return final;
  }
  await Deno.mkdir(CACHE, { recursive: true });
  await pruneCache(name);
  const building = `${CACHE}/.building-${name}-${crypto.randomUUID()}`;
  await Deno.mkdir(building);
  try {
    await build(building);
    await Deno.rename(building, final); // fails if another process got there first: theirs wins
  } catch (err) {
    await Deno.remove(building, { recursive: true }).catch(() => {});
    if (!(await exists(final))) throw err;
  }
  return final;
}

/** A short hex SHA-256 of `text`. */
async function digest(text: string): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
  return Array.from(hash.slice(0, 6), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What the templates depend on: PGlite's version (its resolved path names it). */
const PGLITE = import.meta.resolve("@electric-sql/pglite");

let template: Promise<string> | undefined;

/**
 * The test databases' own setting: a smaller buffer cache than PGlite's 128 MB (a test database
 * holds a few MB), which PGlite zeroes at every boot, a third of a copy's boot time.
 */
const TEMPLATE_SETTINGS = "alter system set shared_buffers = '32MB'";

/** An initialized, empty PGlite folder (initdb takes seconds), one per PGlite version. */
function embeddedTemplate(): Promise<string> {
  template ??=
    (async () =>
      cachedDir(`empty-${await digest(PGLITE + TEMPLATE_SETTINGS)}`, async (dir) => {
        const pg = await PGlite.create(dir);
        await pg.exec(TEMPLATE_SETTINGS);
        await pg.close();
      }))();
  return template;
}

async function copyDir(from: string, to: string) {
  const { success } = await new Deno.Command("cp", { args: ["-a", `${from}/.`, to] }).output();
  if (!success) throw new Error(`Could not copy ${from} to ${to}`);
}

/** The migrations' digest: a migrated template is reused only while they are unchanged. */
async function migrationsDigest(): Promise<string> {
  return await digest(JSON.stringify(await loadMigrations()));
}

/** Applies the migrations to the database at `url` (as the local server would at start). */
async function migrateAt(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await migrate(sql, await loadMigrations());
  } finally {
    await sql.end();
  }
}

let serverTemplate: Promise<string> | undefined;

/**
 * A migrated template database on the server, made once per set of migrations (an advisory lock
 * keeps parallel test processes from making it twice); fresh databases are cloned from it.
 * Migrated by the real Supabase CLI (`supabase db push --db-url …`, installed by `npm ci`), as a
 * hosted project is, so the server-backed tests run against what the CLI makes of the
 * migrations; without the CLI, by the local runner (both record the same rows:
 * tests/shared/schema_test.ts). Its name says which made it.
 */
function migratedServerTemplate(): Promise<string> {
  serverTemplate ??= (async () => {
    const cli = await cliInstalled();
    const name = `tpl_${await migrationsDigest()}${cli ? "_cli" : ""}`;
    const admin = postgres(SERVER_URL!, { max: 1, onnotice: () => {} });
    try {
      await admin`select pg_advisory_lock(7231005)`;
      const [found] = await admin`select 1 from pg_database where datname = ${name}`;
      if (!found) {
        // A build a killed process left behind is made again (the lock is held: none is under way).
        await admin.unsafe(`drop database if exists ${name}_building with (force)`);
        await admin.unsafe(`create database ${name}_building`);
        const url = new URL(SERVER_URL!);
        url.pathname = `/${name}_building`;
        if (cli) await dbPush(url.toString());
        else await migrateAt(url.toString());
        await admin.unsafe(`alter database ${name}_building rename to ${name}`);
      }
      await admin`select pg_advisory_unlock(7231005)`;
    } finally {
      await admin.end();
    }
    return name;
  })();
  return serverTemplate;
}

let migratedTemplate: Promise<string> | undefined;

/**
 * The embedded template with the migrations applied, as the local server applies them; one per
 * PGlite version, set of migrations, runner and embedded server.
 */
function embeddedMigratedTemplate(): Promise<string> {
  migratedTemplate ??= (async () => {
    const [runner, server] = await Promise.all(
      ["../../local/migrate.ts", "../../local/embedded_db.ts"].map((path) =>
        Deno.readTextFile(new URL(path, import.meta.url))
      ),
    );
    const key = await digest(
      JSON.stringify([PGLITE, TEMPLATE_SETTINGS, await migrationsDigest(), runner, server]),
    );
    const empty = await embeddedTemplate();
    return cachedDir(`migrated-${key}`, async (dir) => {
      await copyDir(empty, dir);
      const embedded = await startEmbedded(dir);
      try {
        await migrateAt(embedded.url);
      } finally {
        await embedded.close();
      }
    });
  })();
  return migratedTemplate;
}

export interface FreshDatabaseOptions {
  /** An embedded database even when a server is configured. */
  embedded?: boolean;
  /**
   * Already migrated (cloned from a migrated template): the server under test then finds every
   * migration recorded and applies none. Default false: an empty database.
   */
  migrated?: boolean;
}

/** URLs of the embedded databases served by this process (see `isEmbeddedUrl`). */
const embeddedUrls = new Set<string>();

/**
 * Whether `url` is an embedded database this process served: a Database opened on it must run
 * one call at a time (`serial`), as the local server runs its embedded database.
 */
export function isEmbeddedUrl(url: string): boolean {
  return embeddedUrls.has(url);
}

/** A new database: empty, or migrated when asked. */
export async function freshDatabase(opts: FreshDatabaseOptions = {}): Promise<TestDatabase> {
  if (SERVER_URL && !opts.embedded) {
    const name = `t_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const template = opts.migrated ? ` template ${await migratedServerTemplate()}` : "";
    const admin = postgres(SERVER_URL, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}${template}`);
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
  const instance = idle[opts.migrated ? "migrated" : "empty"].pop() ??
    await bootEmbedded(opts.migrated ?? false);
  const served = await serveEmbedded(instance.pg);
  embeddedUrls.add(served.url);
  return {
    url: served.url,
    kind: "embedded",
    async close() {
      embeddedUrls.delete(served.url);
      await served.close();
      if (await instance.reset()) {
        idle[opts.migrated ? "migrated" : "empty"].push(instance);
      } else {
        await instance.pg.close();
        await Deno.remove(instance.dir, { recursive: true });
      }
    },
  };
}

interface EmbeddedInstance extends ReusablePGlite {
  dir: string;
}

/** Instances put back by the tests of this file, by template (see embedded_reuse.ts). */
const idle: Record<"empty" | "migrated", EmbeddedInstance[]> = { empty: [], migrated: [] };

globalThis.addEventListener("unload", () => {
  for (const instance of [...idle.empty, ...idle.migrated]) {
    Deno.removeSync(instance.dir, { recursive: true });
  }
});

let warmed = false;

/** A new copy of the template, booted. */
async function bootEmbedded(migrated: boolean): Promise<EmbeddedInstance> {
  const dir = await Deno.makeTempDir({ prefix: "pglite-test-" });
  await copyDir(await (migrated ? embeddedMigratedTemplate() : embeddedTemplate()), dir);
  const pg = await openEmbedded(dir);
  if (!migrated && !warmed) {
    // PGlite's WebAssembly starts cold in each test process (V8 optimizes its hot functions
    // only after they ran a while): the first migrations it runs take five times as long as the
    // third (measured 0.8 s, 0.35 s, 0.15 s), over the tests' one-second query deadline on a
    // loaded machine. Running them twice in a transaction that rolls back leaves it empty.
    warmed = true;
    const statements = (await loadMigrations()).flatMap((m) => m.statements);
    for (let i = 0; i < 2; i++) {
      await pg.transaction(async (tx) => {
        for (const statement of statements) await tx.exec(statement);
        await tx.rollback();
      }).catch(() => {});
    }
  }
  return Object.assign(await trackFresh(pg), { dir });
}

/** Options of {@linkcode withMigratedDatabase}. */
export interface MigratedDatabaseOptions {
  /** Limits the Database is opened with (parseLimits's variables). */
  limits?: Record<string, string>;
  /** Pool size (default the limits'); the embedded database serves one call at a time anyway. */
  poolMax?: number;
}

/**
 * A fresh migrated database and a started Database on it (one call at a time on the embedded
 * one, as the local server runs it), for `fn`; both closed after it.
 */
export async function withMigratedDatabase(
  fn: (db: Database, t: TestDatabase) => Promise<void>,
  opts: MigratedDatabaseOptions = {},
): Promise<void> {
  const t = await freshDatabase({ migrated: true });
  const settings = databaseSettings(parseLimits(opts.limits ?? {}));
  const db = new Database({
    url: t.url,
    ...settings,
    poolMax: opts.poolMax ?? settings.poolMax,
    serial: t.kind === "embedded",
  });
  try {
    await db.start();
    await fn(db, t);
  } finally {
    await db.close();
    await t.close();
  }
}
