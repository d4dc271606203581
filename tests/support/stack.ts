/**
 * The whole product for end-to-end suites: a fresh database, every simulator (the sandbox's own,
 * steerable through `sims`), and the real server with every function — in this process, or as
 * several `deno run local/serve.ts` processes over the same database.
 */
import postgres from "postgres";
import { type Sandbox, type Simulators, startSandbox } from "../../local/sandbox/index.ts";
import { freshDatabase, type TestDatabase } from "./db.ts";
import { FAST_LIMITS, FRONTEND, JWT_SECRET } from "./env.ts";
import { type SpawnedServer, spawnServer, startTestServer, type TestServer } from "./server.ts";

export interface Stack {
  db: TestDatabase;
  sandbox: Sandbox;
  sims: Simulators;
  /** The environment the servers run with. */
  env: Record<string, string>;
  /** The in-process server (absent when `processes` was given). */
  server: TestServer;
  /** Separate server processes over the same database (`processes` option). */
  processes: SpawnedServer[];
  /** A direct connection for checking what was written. */
  sql: postgres.Sql;
  jwtSecret: string;
  frontend: string;
  userToken(sub?: string): Promise<string>;
  serviceToken(): Promise<string>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Overrides of the environment (limits, URLs through a fault proxy…). */
  env?: Record<string, string>;
  /** Instead of one in-process server, this many server processes. */
  processes?: number;
  /** Rewrites the database URL the servers use (e.g. through a fault proxy). */
  dbUrlFor?: (url: string) => string;
  /** Last say over the servers' environment (e.g. an upstream through a fault proxy). */
  wrapEnv?: (env: Record<string, string>) => Promise<Record<string, string>>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const db = await freshDatabase({ migrated: true });
  const sandbox = await startSandbox({
    databaseUrl: db.url,
    jwtSecret: JWT_SECRET,
    frontendUrl: FRONTEND,
  });
  let env: Record<string, string> = {
    ...sandbox.env,
    ...FAST_LIMITS,
    SUPABASE_DB_URL: opts.dbUrlFor ? opts.dbUrlFor(db.url) : db.url,
    ...opts.env,
  };
  if (opts.wrapEnv) env = await opts.wrapEnv(env);
  const processes: SpawnedServer[] = [];
  let server: TestServer | undefined;
  try {
    if (opts.processes) {
      for (let i = 0; i < opts.processes; i++) processes.push(await spawnServer(env));
    } else {
      server = await startTestServer(env);
    }
  } catch (err) {
    for (const p of processes) await p.stop("SIGKILL");
    await sandbox.close();
    await db.close();
    throw err;
  }
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  return {
    db,
    sandbox,
    sims: sandbox.simulators,
    env,
    server: server!,
    processes,
    sql,
    jwtSecret: JWT_SECRET,
    frontend: FRONTEND,
    // Signed as hosted Supabase signs them (ES256 with a kid, verified against SUPABASE_JWKS).
    userToken: (sub = crypto.randomUUID()) =>
      sandbox.signingKey.sign({
        iss: `${env.SUPABASE_URL}/auth/v1`,
        sub,
        role: "authenticated",
        aud: "authenticated",
      }),
    serviceToken: () => sandbox.signingKey.sign({ role: "service_role", iss: "supabase" }),
    async close() {
      await sql.end();
      await server?.close();
      for (const p of processes) await p.stop("SIGTERM");
      await sandbox.close();
      await db.close();
    },
  };
}
