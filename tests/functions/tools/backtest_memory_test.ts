/**
 * The memory bound, measured on a real server process: a backtest over 1,000,000
 * one-minute bars raises the process's peak resident memory by less than 64 MB over what a
 * 1,000-bar run already needed, with the bars fetched page by page. Also prints the server's CPU
 * time for the million-bar run (the figure docs/api.md and shared/limits.ts quote for
 * TOOLS_BACKTEST_MAX_BARS; not asserted: tests never assert speed).
 */
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_SECRETS } from "../../../local/sandbox/index.ts";
import { startMarketDataSimulator } from "../../../local/sandbox/market_data.ts";
import { freshDatabase } from "../../support/db.ts";
import { testEnv, userToken } from "../../support/env.ts";
import { denoRun, pumpLines } from "../../support/server.ts";

const KEYS = {
  keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
  secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
};
const MB = 1024 * 1024;

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM). */
async function procMemory(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1];
  if (!kb) throw new Error(`No ${field} in /proc/${pid}/status`);
  return Number(kb) * 1024;
}

/** User + system CPU seconds of a process so far (/proc/<pid>/stat fields 14 and 15). */
async function procCpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}

const START = Date.parse("2024-01-01T00:00:00Z");
const params = (bars: number) => ({
  symbol: "AAPL",
  timeframe: "1Min",
  start: new Date(START).toISOString(),
  end: new Date(START + bars * 60_000).toISOString(),
  strategy: { kind: "sma_cross", fast: 50, slow: 200 },
  initialCash: 10_000,
});

Deno.test({
  name:
    "backtest.run: a million one-minute bars grow the server's peak memory by < 64 MB over a 1,000-bar run",
  ignore: Deno.build.os !== "linux", // reads /proc
  async fn() {
    const sim = await startMarketDataSimulator(KEYS);
    const db = await freshDatabase();
    const child = denoRun("local/serve.ts", {
      PORT: "0",
      ...testEnv(db.url, {
        MARKET_DATA_API_URL: sim.url,
        MARKET_DATA_API_KEY_ID: KEYS.keyId,
        MARKET_DATA_API_SECRET_KEY: KEYS.secretKey,
        // The million bars (the default cap keeps a run within hosted CPU limits), and a
        // deadline for a loaded test machine rather than the platform's budget.
        TOOLS_BACKTEST_MAX_BARS: "1000000",
        TOOLS_BACKTEST_DEADLINE_MS: "120000",
      }),
    });
    const output: string[] = [];
    let ready: (url: string) => void;
    const url = new Promise<string>((r) => ready = r);
    const pumps = Promise.all([child.stdout, child.stderr].map((s) =>
      pumpLines(s, (line) => {
        output.push(line);
        const m = /^Serving (http:\/\/[\d.:]+)\/functions\/v1/.exec(line);
        if (m) ready(m[1]);
      })
    ));
    try {
      const timer = setTimeout(() => ready(""), 60_000);
      const base = await url;
      clearTimeout(timer);
      assert(base, `server did not start:\n${output.join("\n")}`);
      const token = await userToken();
      const run = async (bars: number) => {
        const res = await fetch(`${base}/functions/v1/tools/execute`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ tool: "backtest.run", params: params(bars) }),
        });
        const body = await res.json();
        assertEquals(res.status, 200, JSON.stringify(body));
        return body;
      };

      // Warm up (JIT, pools, the first pages), then the baseline: the peak after 1,000 bars.
      for (let i = 0; i < 3; i++) assertEquals((await run(1_000)).bars, 1_000);
      const baseline = await procMemory(child.pid, "VmHWM");
      const pagesBefore = sim.barPages;

      const cpuBefore = await procCpuSeconds(child.pid);
      const big = await run(1_000_000);
      const cpu = await procCpuSeconds(child.pid) - cpuBefore;
      const peak = await procMemory(child.pid, "VmHWM");

      assertEquals(big.bars, 1_000_000);
      assertEquals(sim.barPages - pagesBefore, 100); // page by page, 10,000 at a time
      console.log(
        `1,000,000 bars: server CPU ${cpu.toFixed(2)} s; peak RSS ${
          (baseline / MB).toFixed(1)
        } MB after 1,000 bars, ${(peak / MB).toFixed(1)} MB after 1,000,000`,
      );
      assert(peak - baseline < 64 * MB, `peak grew by ${((peak - baseline) / MB).toFixed(1)} MB`);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await pumps;
      await db.close();
      await sim.close();
    }
  },
});
