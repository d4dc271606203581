/**
 * Where the machine's CPU went during a measurement (Linux `/proc`): per process group (the
 * server, the benchmark's own process, the Postgres backends of the benchmark's database,
 * pgbench), Postgres's own background processes (WAL writer, checkpointer…, which work for every
 * database of the server), everything else on the machine, and idle time. A ratio measured on a shared
 * machine means little without it: the function, its load generator and Postgres share the
 * same cores, and another job's load shows here as `other`.
 *
 * Samples are taken while the measured processes run (a process that exits between two samples
 * is not counted, so both samples must fall inside the run).
 *
 * @example
 * ```ts
 * import { cpuSplit, sampleCpu } from "./cpu.ts";
 *
 * const before = sampleCpu();
 * await new Promise((r) => setTimeout(r, 1000));
 * const split = cpuSplit(before, sampleCpu(), { bench: (pid) => pid === Deno.pid });
 * split.groups.bench; // percent of one core
 * ```
 */

/** CPU time (user + system) of every process, and the machine's totals, at one moment. */
export interface CpuSample {
  /** ms of CPU by pid, with the command name (and, for Postgres, its process title). */
  processes: Map<number, { comm: string; ms: number; title?: string }>;
  /** Machine totals over all cores, ms. */
  totalMs: number;
  idleMs: number;
  cores: number;
}

/** Process titles of Postgres's background processes (`postgres: 15/main: walwriter`). */
const BACKGROUND =
  /^postgres: (?:\S+: )?(?:checkpointer|background writer|walwriter|autovacuum|logical replication|stats|archiver)/;

/** USER_HZ: the unit of /proc's CPU times (100 on Linux). */
const TICK_MS = 10;

/** User + system CPU time, ms, from a `/proc/<pid>/stat` line. */
function cpuMsOfStat(stat: string): number {
  // Fields after the command name; utime and stime are the 14th and 15th.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

/** Samples every process's CPU time; an empty sample where /proc is not readable. */
export function sampleCpu(): CpuSample {
  const processes = new Map<number, { comm: string; ms: number; title?: string }>();
  let totalMs = 0, idleMs = 0, cores = 1;
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
        const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const title = comm === "postgres"
          ? Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ").trim()
          : undefined;
        processes.set(Number(entry.name), {
          comm,
          ms: cpuMsOfStat(stat),
          title,
        });
      } catch { /* exited meanwhile */ }
    }
    const lines = Deno.readTextFileSync("/proc/stat").split("\n");
    const all = lines[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    totalMs = all.slice(0, 8).reduce((a, b) => a + b, 0) * TICK_MS;
    idleMs = (all[3] + all[4]) * TICK_MS;
    cores = Math.max(1, lines.filter((l) => /^cpu\d+ /.test(l)).length);
  } catch { /* not Linux */ }
  return { processes, totalMs, idleMs, cores };
}

/** CPU time (user + system) of one process so far, ms; 0 where /proc is not readable. */
export function processCpuMs(pid: number): number {
  try {
    return cpuMsOfStat(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return 0;
  }
}

/** What a stretch of time was spent on, in percent of one core (so 2 cores = 200). */
export interface CpuSplit {
  /** Wall time between the samples, ms. */
  wallMs: number;
  cores: number;
  /**
   * Each named group, then `postgres-shared` (Postgres's background processes), `other` (every
   * other live process), `idle`, and `ended`: what no live process accounts for (processes that
   * ended in between, interrupt time).
   */
  groups: Record<string, number>;
}

/**
 * The CPU between two samples by group: a process belongs to the first group whose test it
 * passes; Postgres's background processes are `postgres-shared`, the rest is `other`. Percent
 * of one core, rounded.
 */
export function cpuSplit(
  before: CpuSample,
  after: CpuSample,
  groups: Record<string, (pid: number, comm: string) => boolean>,
): CpuSplit {
  const wallMs = (after.totalMs - before.totalMs) / after.cores;
  const used: Record<string, number> = {};
  for (const name of Object.keys(groups)) used[name] = 0;
  used["postgres-shared"] = 0;
  used.other = 0;
  for (const [pid, p] of after.processes) {
    const ms = p.ms - (before.processes.get(pid)?.ms ?? 0);
    if (!(ms > 0)) continue;
    const group = Object.keys(groups).find((name) => groups[name](pid, p.comm)) ??
      (p.title && BACKGROUND.test(p.title) ? "postgres-shared" : "other");
    used[group] += ms;
  }
  used.idle = after.idleMs - before.idleMs;
  // What no live process accounts for: processes that ended in between, and interrupt time.
  const accounted = Object.values(used).reduce((a, b) => a + b, 0);
  used.ended = Math.max(0, after.totalMs - before.totalMs - accounted);
  const pct = (ms: number) => wallMs > 0 ? Math.round((ms / wallMs) * 100) : 0;
  return {
    wallMs: Math.round(wallMs),
    cores: after.cores,
    groups: Object.fromEntries(Object.entries(used).map(([k, v]) => [k, pct(v)])),
  };
}
