/**
 * A throwaway Postgres cluster for the chaos run: `initdb` into a temporary folder, `pg_ctl`
 * on a free port from 5433 up, stopped and started again by the nemesis (a real Postgres
 * restart), and removed at the end. A restart of the shared server on 5432 would disturb every
 * other session using it; this cluster is the run's own. Run as root (this machine, CI), the
 * binaries run as the `postgres` user through `runuser`, since Postgres refuses to run as root.
 *
 * @example
 * ```ts
 * import { startCluster } from "./cluster.ts";
 *
 * const pg = await startCluster();
 * await pg.stop("immediate"); // a crash
 * await pg.start();
 * await pg.destroy();
 * ```
 */

/** Where Debian's Postgres 15 keeps its binaries (override with PG_BIN). */
const PG_BIN = Deno.env.get("PG_BIN") ?? "/usr/lib/postgresql/15/bin";

export interface Cluster {
  port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres`. */
  url: string;
  dir: string;
  /** `pg_ctl stop`: `immediate` is a crash (recovery at the next start), `fast` a clean stop. */
  stop(mode?: "immediate" | "fast"): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its folder. */
  destroy(): Promise<void>;
}

const isRoot = () => Deno.uid?.() === 0;

async function run(cmd: string, args: string[], asPostgres: boolean): Promise<string> {
  const [bin, argv] = asPostgres && isRoot()
    ? ["runuser", ["-u", "postgres", "--", cmd, ...args]]
    : [cmd, args];
  const out = await new Deno.Command(bin, { args: argv, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** Whether nothing listens on `port` on loopback. */
function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** initdb, then start on the first free port from `fromPort` (default 5433). */
export async function startCluster(opts: { fromPort?: number } = {}): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: "chaos-pg-" });
  if (isRoot()) await run("chown", ["postgres:postgres", dir], false);
  await run(`${PG_BIN}/initdb`, [
    "-D",
    `${dir}/data`,
    "-U",
    "postgres",
    "-A",
    "trust",
    "--no-sync",
    "-E",
    "UTF8",
  ], true);
  let port = opts.fromPort ?? 5433;
  while (!portFree(port)) port++;
  const ctl = (args: string[]) => run(`${PG_BIN}/pg_ctl`, ["-D", `${dir}/data`, ...args], true);
  const start = () =>
    ctl([
      "-l",
      `${dir}/server.log`,
      "-w",
      "-t",
      "60",
      "-o",
      // Loopback only, its socket in its own folder; fsync off: a throwaway cluster.
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
      "start",
    ]).then(() => {});
  await start();
  let destroyed = false;
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dir,
    stop: (mode = "immediate") => ctl(["-m", mode, "-w", "stop"]).then(() => {}),
    start,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await ctl(["-m", "immediate", "-w", "stop"]).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
