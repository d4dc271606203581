/**
 * The real local server for integration tests: in this process (`startTestServer`), or as a
 * separate `deno run local/serve.ts` process (`spawnServer`) for tests across instances, kills
 * and graceful shutdown. Both capture every log line so tests can check what was logged.
 */
import { createLogger } from "../../shared/logger.ts";
import { denoRun, pumpLines } from "./process.ts";

export { denoRun, pumpLines };
import { type RunningServer, type ServerOptions, startServer } from "../../local/serve.ts";

export interface TestServer extends RunningServer {
  logs: string[];
  /** A request to `/functions/v1/<path>`, handled in-process by the server's handler. */
  call(path: string, init?: RequestInit): Promise<Response>;
}

/** Starts the real server in-process on a free port with `env` (no env files, no sandbox). */
export async function startTestServer(
  env: Record<string, string>,
  opts: { only?: string[]; schedule?: ServerOptions["schedule"] } = {},
): Promise<TestServer> {
  const logs: string[] = [];
  const server = await startServer({
    port: 0,
    env,
    only: opts.only,
    // Tests run scheduled jobs by calling `server.jobs.runDue` (no real timers) unless they ask.
    schedule: opts.schedule ?? { timers: false },
    log: createLogger({ write: (line) => logs.push(line) }),
  });
  return Object.assign(server, {
    logs,
    // In-process: the booted functions' fetch through the server's router, no socket. Tests
    // whose point is the socket (slow bodies, browsers) use `server.url` with a real fetch.
    call: (path: string, init?: RequestInit) =>
      server.fetch(new Request(`${server.url}/functions/v1/${path}`, init)),
  });
}

export interface SpawnedServer {
  url: string;
  output: string[];
  call(path: string, init?: RequestInit): Promise<Response>;
  /** Sends a signal and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

export interface SpawnOptions {
  /** Working directory (the sandbox keeps `.data/` there). Default the project root. */
  cwd?: string;
  /** Entry point relative to the project root. Default `local/serve.ts` (`npm start`). */
  entry?: string;
  /** A line that says the server listens; its first group is the base URL. */
  ready?: RegExp;
}

/** Runs `npm start`'s entry point as its own process with exactly `env` (plus PATH and HOME). */
export async function spawnServer(
  env: Record<string, string>,
  opts: SpawnOptions = {},
): Promise<SpawnedServer> {
  const readyLine = opts.ready ?? /^Serving (http:\/\/[\d.:]+)\/functions\/v1/;
  const child = denoRun(opts.entry ?? "local/serve.ts", { PORT: "0", ...env }, { cwd: opts.cwd });
  const output: string[] = [];
  let resolveUrl: (url: string) => void;
  let rejectUrl: (err: Error) => void;
  const ready = new Promise<string>((res, rej) => {
    resolveUrl = res;
    rejectUrl = rej;
  });
  const pump = (stream: ReadableStream<Uint8Array>) =>
    pumpLines(stream, (line) => {
      output.push(line);
      const m = readyLine.exec(line);
      if (m) resolveUrl(m[1]);
    });
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const status = child.status.then((s) => {
    rejectUrl(new Error(`server exited with ${s.code} before listening:\n${output.join("\n")}`));
    return s;
  });
  const timer = setTimeout(
    () => rejectUrl(new Error(`server did not start:\n${output.join("\n")}`)),
    60_000,
  );
  let url: string;
  try {
    url = await ready;
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await status;
    await pumps;
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    url,
    output,
    call: (path, init) => fetch(`${url}/functions/v1/${path}`, init),
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      const s = await status;
      await pumps;
      return s.code;
    },
  };
}
