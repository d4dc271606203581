/**
 * The local server behind `npm start` (local only: never part of a deployed function): one process mounts every folder of `functions/` at
 * `/functions/v1/<name>` on `PORT` (54321), as `supabase functions serve` does.
 *
 * Profile, chosen once at start: the **sandbox** (embedded Postgres, simulated upstreams on
 * loopback, printed development secrets) only when no contract variable is set and no env file
 * exists; otherwise **production**, where every function validates its own variables and one
 * whose configuration is invalid answers `503 BOOT_ERROR` while the others serve.
 *
 * @example
 * ```ts
 * import { startServer } from "./serve.ts";
 *
 * const server = await startServer({ port: 0, env: { ...Deno.env.toObject() } });
 * await fetch(`${server.url}/functions/v1/status`);
 * await server.close();
 * ```
 */
import { parse as parseDotenv } from "dotenv";
import { getPath } from "hono/utils/url";
import * as z from "../shared/zod.ts";
import type { FunctionDefinition } from "../shared/platform/app.ts";
import { bootFunction, type FetchHandler } from "../shared/platform/boot.ts";
import { requestIdOf } from "../shared/http/request_id.ts";
import { operatorAlerts } from "../shared/alerts/operator_alerts.ts";
import { ConfigError } from "../shared/env.ts";
import { errorResponse, NotFound } from "../shared/errors.ts";
import { createLogger, type Logger } from "../shared/logger.ts";
import { createPlatform, type RunningPlatform } from "../shared/platform/platform.ts";
import { isEmbeddedDatabase } from "./embedded_db.ts";
import { JobRunner, SCHEDULED_JOBS_SQL, type ScheduledJob } from "./job_runner.ts";
import { loadMigrations, migrate } from "./migrate.ts";
import { CONTRACT_VARIABLES, type Sandbox, startSandbox } from "./sandbox/index.ts";

const ROOT = new URL("../", import.meta.url);
const ENV_FILES = [".env", "supabase/functions/.env"];

export interface ServerOptions {
  /** 0 picks a free port. Default `PORT` or 54321. */
  port?: number;
  hostname?: string;
  /** The environment; default the process's merged with the env files. */
  env?: Record<string, string | undefined>;
  /** Embedded database folder (sandbox and tests). */
  dataDir?: string;
  log?: Logger;
  /** Only these functions (tests); default every folder of `functions/`. */
  only?: string[];
  /** Told the profile as soon as it is chosen, before anything else prints. */
  announce?: (line: string) => void;
  /**
   * The scheduled jobs (local/job_runner.ts): the clock, and whether real timers run them
   * (default true; tests pass false and call `server.jobs.runDue`).
   */
  schedule?: { now?: () => number; timers?: boolean };
}

export interface RunningServer {
  url: string;
  port: number;
  profile: "sandbox" | "production";
  platform: RunningPlatform;
  sandbox?: Sandbox;
  /**
   * The runner of `internal.scheduled_jobs` (every job of the migrations, on its schedule), once
   * the database is migrated and the jobs are read; null until then.
   */
  readonly jobs: JobRunner | null;
  /**
   * The server's handler, called in-process (tests): the same routing and functions as a
   * request over the socket, without the socket. `info` defaults to a loopback client.
   */
  fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
  /** Stops accepting, finishes in-flight requests, closes the pool. */
  close(): Promise<void>;
}

/** Reads the env files that exist (later files do not override earlier ones or the process). */
export async function loadEnvFiles(
  root: URL = ROOT,
): Promise<{ vars: Record<string, string>; files: string[] }> {
  const vars: Record<string, string> = {};
  const files: string[] = [];
  for (const name of ENV_FILES) {
    let text: string;
    try {
      text = await Deno.readTextFile(new URL(name, root));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    files.push(name);
    for (const [k, v] of Object.entries(parseDotenv(text))) vars[k] ??= v;
  }
  return { vars, files };
}

/** A function folder: its definition, or why its module could not be loaded. */
export type LoadedFunction = { name: string; def?: FunctionDefinition; error?: unknown };

/** The functions: every folder of `functions/`, each `index.ts` exporting a definition. */
export async function loadFunctions(only?: string[]): Promise<LoadedFunction[]> {
  const dir = new URL("functions/", ROOT);
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory && (!only || only.includes(entry.name))) names.push(entry.name);
  }
  return await Promise.all(
    names.sort().map(async (name): Promise<LoadedFunction> => {
      try {
        const mod = await import(new URL(`${name}/index.ts`, dir).href);
        return { name, def: mod.default as FunctionDefinition };
      } catch (error) {
        return { name, error };
      }
    }),
  );
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger();
  let env = opts.env;
  let envFiles: string[] = [];
  if (!env) {
    const loaded = await loadEnvFiles();
    envFiles = loaded.files;
    env = { ...loaded.vars, ...Deno.env.toObject() };
  }
  const sandboxed = envFiles.length === 0 && !CONTRACT_VARIABLES.some((k) => env![k]);
  opts.announce?.(
    sandboxed
      ? "*** SANDBOX PROFILE: embedded Postgres and SIMULATED broker, market data, Discord and Supabase Auth. Not for real money. ***"
      : `Profile: production (configuration from the environment${
        envFiles.length ? ` and ${envFiles.join(", ")}` : ""
      })`,
  );
  // Listen first: the sandbox's Auth lives on this same port, so its URL is known only now.
  const handlers = new Map<string, FetchHandler>();
  let auth: ((req: Request) => Promise<Response>) | undefined;
  // Until booted, requests wait on `booting`; after, they are dispatched without a wait, so a
  // function's synchronous answer (an answered preflight) reaches Deno.serve as it is.
  let ready!: () => void;
  let booting: Promise<void> | undefined = new Promise<void>((resolve) =>
    ready = () => {
      booting = undefined;
      resolve();
    }
  );
  const handler = (req: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> =>
    booting ? booting.then(() => dispatch(req, info)) : dispatch(req, info);
  const dispatch = (req: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> => {
    const path = getPath(req);
    if (auth && path.startsWith("/auth/v1/")) return auth(req);
    const match = /^\/functions\/v1\/([\w-]+)(\/|$)/.exec(path);
    const fn = match && handlers.get(match[1]);
    if (!fn) {
      const id = requestIdOf(req.headers.get("x-request-id"));
      const res = errorResponse(new NotFound("No such function."), id);
      res.headers.set("x-request-id", id);
      return res;
    }
    // The function drops the /functions/v1 prefix itself (see shared/platform/boot.ts), as Supabase's runtime
    // hands it the path after it; the connection's address goes with the request, as the
    // platform's gateway passes it on, so clients are told apart.
    return fn(req, info);
  };
  const server = Deno.serve({
    port: opts.port ?? Number(env.PORT ?? 54321),
    hostname: opts.hostname ?? "127.0.0.1",
    onListen: () => {},
  }, handler);
  const port = server.addr.port;
  const url = `http://127.0.0.1:${port}`;

  let sandbox: Sandbox | undefined;
  let platform: RunningPlatform | undefined;
  try {
    if (sandboxed) {
      sandbox = await startSandbox({
        dataDir: opts.dataDir ?? ".data",
        port,
        supabaseUrl: url,
        print: printLine,
      });
      auth = sandbox.simulators.auth.handler;
      env = { ...env, ...sandbox.env };
    }
    const migrations = await loadMigrations();
    platform = await createPlatform(env, {
      log,
      alertSink: operatorAlerts,
      // The embedded database serves one call at a time; the database layer is told, not guessing.
      serialDatabase: sandboxed || await isEmbeddedDatabase(env.SUPABASE_DB_URL),
      // The local server is where migrations run (hosted Supabase: `supabase db push`).
      onConnect: async (sql) => {
        const applied = await migrate(sql, migrations);
        if (applied.length) log.info("migrations applied", { versions: applied });
      },
    });
    for (const { name, def, error } of await loadFunctions(opts.only)) {
      if (error) log.error("function module failed to load", { fn: name, error });
      const fn = await bootFunction(def ?? unloadable(name), platform);
      handlers.set(name, fn.fetch);
      if (fn.problems.length) printLine(`✗ ${name} did not boot: ${fn.problems.join("; ")}`);
    }
  } catch (err) {
    await server.shutdown();
    await platform?.close();
    await sandbox?.close();
    throw err;
  }
  ready();
  let closing: Promise<void> | undefined;
  const scheduler = scheduleJobs({
    platform: platform!,
    log,
    url,
    serviceKey: env.SUPABASE_SERVICE_ROLE_KEY,
    served: new Set(handlers.keys()),
    ...opts.schedule,
  });
  return {
    url,
    port,
    profile: sandboxed ? "sandbox" : "production",
    platform: platform!,
    sandbox,
    get jobs() {
      return scheduler.runner;
    },
    fetch: async (req, info = LOOPBACK) => await handler(req, info),
    close() {
      closing ??= (async () => {
        await scheduler.close();
        await server.shutdown();
        await platform!.close();
        await sandbox?.close();
      })();
      return closing;
    },
  };
}

/** How often the jobs are read again while the database cannot be read (or migrated). */
const JOBS_RETRY_MS = 5_000;

/**
 * Reads `internal.scheduled_jobs` once the database is migrated (retrying while it is down) and
 * runs every job whose function this server serves, POSTing its route with the service-role key.
 */
function scheduleJobs(o: {
  platform: RunningPlatform;
  log: Logger;
  url: string;
  serviceKey: string | undefined;
  served: Set<string>;
  now?: () => number;
  timers?: boolean;
}): { runner: JobRunner | null; close(): Promise<void> } {
  const state = {
    runner: null as JobRunner | null,
    closed: false,
    retry: undefined as ReturnType<typeof setTimeout> | undefined,
    loading: undefined as Promise<void> | undefined,
  };
  if (!o.serviceKey) {
    o.log.warn("scheduled jobs not run locally: SUPABASE_SERVICE_ROLE_KEY is not set");
    return { runner: null, close: () => Promise.resolve() };
  }
  const key = o.serviceKey;
  const run = async (job: ScheduledJob) => {
    const res = await fetch(`${o.url}${job.path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(job.body ?? {}),
    });
    const text = await res.text();
    const line = { job: job.name, status: res.status, body: text.slice(0, 300) };
    if (res.ok) o.log.info("scheduled job ran", line);
    else o.log.warn("scheduled job answered an error", line);
  };
  const load = async () => {
    try {
      const rows = await o.platform.db.query((sql) =>
        sql.unsafe<ScheduledJob[]>(SCHEDULED_JOBS_SQL)
      );
      if (state.closed) return;
      const jobs = rows.filter((j) => {
        const fn = /^\/functions\/v1\/([\w-]+)/.exec(j.path)?.[1];
        return fn !== undefined && o.served.has(fn);
      });
      state.runner = new JobRunner({ jobs, run, log: o.log, now: o.now, timers: o.timers });
      o.log.info("scheduled jobs", { jobs: jobs.map((j) => `${j.name} (${j.schedule})`) });
    } catch (error) {
      if (state.closed) return;
      o.log.warn("scheduled jobs could not be read yet; retrying", { error });
      state.retry = setTimeout(() => void (state.loading = load()), JOBS_RETRY_MS);
    }
  };
  state.loading = load();
  return {
    get runner() {
      return state.runner;
    },
    async close() {
      state.closed = true;
      clearTimeout(state.retry);
      await state.loading;
      await state.runner?.close();
    },
  };
}

/** The connection info of an in-process call: a client on loopback. */
const LOOPBACK: Deno.ServeHandlerInfo = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 0 },
  completed: Promise.resolve(),
};

/** A stand-in definition for a folder whose module failed to load: it boots into BOOT_ERROR. */
function unloadable(name: string): FunctionDefinition {
  return {
    name,
    env: z.object({}),
    browser: false,
    build() {
      throw new ConfigError(["its module failed to load (see the log)"]);
    },
  };
}

const encoder = new TextEncoder();
function printLine(line: string) {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

if (import.meta.main) {
  let server: RunningServer;
  try {
    server = await startServer({ announce: printLine });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    printLine(`✗ Configuration is invalid: ${err.problems.join("; ")}`);
    Deno.exit(1);
  }
  if (server.sandbox) {
    printLine(server.sandbox.exports(server.url));
    printLine(server.sandbox.banner(server.url));
  }
  printLine(`Serving ${server.url}/functions/v1/<name>`);
  const stop = async () => {
    printLine("Shutting down: finishing in-flight requests…");
    const grace = setTimeout(() => Deno.exit(1), server.platform.limits.SHUTDOWN_GRACE_MS);
    await server.close();
    clearTimeout(grace);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
