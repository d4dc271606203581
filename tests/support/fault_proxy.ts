/**
 * A small TCP proxy for fault injection between the functions and Postgres or an upstream:
 * `cut()` resets every connection and refuses new ones, `stall()` keeps connections open but
 * forwards nothing, `slow(ms)` delays every chunk, `heal()` passes traffic again.
 * (Toxiproxy is not available here; this is the part of it the tests need.)
 */

export type Mode = { kind: "pass" } | { kind: "cut" } | { kind: "stall" } | {
  kind: "slow";
  ms: number;
};

export interface FaultProxy {
  port: number;
  /** `target` URL with host and port replaced by the proxy's. */
  url(target: string): string;
  cut(): void;
  stall(): void;
  slow(ms: number): void;
  heal(): void;
  close(): Promise<void>;
}

export function startFaultProxy(
  target: { hostname: string; port: number },
): Promise<FaultProxy> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let mode = { kind: "pass" } as Mode;
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();

  const closeQuietly = (c: Deno.Conn) => {
    try {
      c.close();
    } catch { /* already closed */ }
    open.delete(c);
  };
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        while (mode.kind === "stall") await new Promise((r) => setTimeout(r, 20));
        if (mode.kind === "cut") break;
        if (mode.kind === "slow") {
          await new Promise((r) => setTimeout(r, (mode as { ms: number }).ms));
        }
        let written = 0;
        while (written < n) written += await to.write(buf.subarray(written, n));
      }
    } catch { /* either side went away */ }
    closeQuietly(from);
    closeQuietly(to);
  };
  const serve = (async () => {
    for await (const client of listener) {
      if (mode.kind === "cut") {
        closeQuietly(client);
        continue;
      }
      open.add(client);
      const task = (async () => {
        let upstream: Deno.Conn;
        try {
          upstream = await Deno.connect(target);
        } catch {
          closeQuietly(client);
          return;
        }
        open.add(upstream);
        await Promise.all([pipe(client, upstream), pipe(upstream, client)]);
      })();
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});

  return Promise.resolve({
    port,
    url(t: string) {
      const u = new URL(t);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.toString();
    },
    cut() {
      mode = { kind: "cut" };
      for (const c of [...open]) closeQuietly(c);
    },
    stall() {
      mode = { kind: "stall" };
    },
    slow(ms: number) {
      mode = { kind: "slow", ms };
    },
    heal() {
      mode = { kind: "pass" };
    },
    async close() {
      mode = { kind: "cut" };
      listener.close();
      for (const c of [...open]) closeQuietly(c);
      await serve;
      await Promise.allSettled([...tasks]);
    },
  });
}
