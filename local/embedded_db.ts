/**
 * The embedded database: PGlite kept in a folder (`.data/` by default), served over the Postgres
 * wire protocol on loopback so the same postgres.js pool, error classification and recovery
 * gate serve it and a real server alike. PGlite is one connection; the pool is sized to match.
 *
 * @example
 * ```ts
 * import { startEmbedded } from "./embedded_db.ts";
 * import { Database } from "../shared/db/db.ts";
 * import { parseLimits } from "../shared/limits.ts";
 * import { databaseSettings } from "../shared/platform/platform.ts";
 *
 * const embedded = await startEmbedded(".data/pglite");
 * const db = new Database({ url: embedded.url, serial: true, ...databaseSettings(parseLimits({})) });
 * await db.close();
 * await embedded.close();
 * ```
 */
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import postgres from "postgres";

export interface Embedded {
  url: string;
  close(): Promise<void>;
}

/** Opens (or creates) the PGlite database in `dir`. */
export async function openEmbedded(dir: string): Promise<PGlite> {
  await Deno.mkdir(dir, { recursive: true });
  return await PGlite.create(dir);
}

/**
 * Serves an open PGlite on a free loopback port; `close` stops listening and drops the
 * connections, and leaves the database open.
 */
export async function serveEmbedded(pg: PGlite): Promise<Embedded> {
  // PGlite is one session. The platform keeps its own calls to one at a time; the other
  // connections allowed here are for looking in (tests' checks, psql on the sandbox), and share
  // that session through pglite-socket's query queue.
  const server = new PGLiteSocketServer({ db: pg, host: "127.0.0.1", port: 0, maxConnections: 8 });
  await server.start();
  // deno-lint-ignore no-explicit-any
  const { port } = (server as any).server.address() as { port: number };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    close: () => server.stop(),
  };
}

/** Opens (or creates) the PGlite database in `dir` and listens on a free loopback port. */
export async function startEmbedded(dir: string): Promise<Embedded> {
  const pg = await openEmbedded(dir);
  const served = await serveEmbedded(pg);
  return {
    url: served.url,
    async close() {
      await served.close();
      await pg.close();
    },
  };
}

/**
 * Whether the database at `url` is an embedded one (PGlite names itself in `version()`), asked
 * once by the local server before it builds the platform, so that it can tell the database layer
 * to run one call at a time. False when it cannot be asked: a real server that is down.
 */
export async function isEmbeddedDatabase(url: string | undefined): Promise<boolean> {
  if (!url) return false;
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    const [{ version }] = await sql`select version()`;
    return String(version).includes("PGlite");
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}
