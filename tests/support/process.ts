/**
 * Server processes for tests and benchmarks: how one is started, and how its output is read.
 * Kept apart from server.ts so that light processes (load generators) need not load the server.
 */

const ROOT = new URL("../../", import.meta.url);

/**
 * `deno run -A <entry>` with this project's config and exactly `env` (plus PATH, HOME, DENO_DIR):
 * how every test and benchmark starts a server process.
 */
export function denoRun(
  entry: string,
  env: Record<string, string>,
  opts: {
    cwd?: string;
    stdout?: "piped" | "null";
    /** Extra `deno run` flags before the entry (e.g. `--cpu-prof`, `--cpu-prof-dir=…`). */
    flags?: string[];
  } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `--config=${new URL("deno.json", ROOT).pathname}`,
      ...(opts.flags ?? []),
      new URL(entry, ROOT).pathname,
    ],
    cwd: opts.cwd ?? ROOT,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
      ...env,
    },
    stdin: "null",
    stdout: opts.stdout ?? "piped",
    stderr: "piped",
  }).spawn();
}

/** Calls `onLine` for each line of a process's output stream, until it closes. */
export async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
) {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) onLine(line);
  }
}
