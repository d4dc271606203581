/**
 * A small TCP proxy for fault injection between the functions and Postgres or an upstream:
 * `cut()` resets every connection and refuses new ones, `stall()` keeps connections open but
 * forwards nothing, `slow(ms)` delays every chunk (one after the other), `latency(ms)` delivers
 * every chunk `ms` after it arrived without slowing the stream (a far database: 5 ms each way is
 * a 10 ms round trip), `heal()` passes traffic again. (Toxiproxy is not available here; this is
 * the part of it the tests need.)
 *
 * It also counts round trips: a client send that follows an answer from the server (or opens
 * the connection) is one, on each connection. A count is deterministic where a time is not, so
 * tests pin how many times a request waits for the database (`resetRoundTrips()` right before
 * the request, `roundTrips` right after). It counts connection attempts too, refused ones
 * included (`connections`): a call that fails fast while the database is cut makes none.
 *
 * `holdWhen(match)` makes a moment of a protocol exchange a thing a test can wait for, instead
 * of a sleep: the first client send that `match` accepts is held, with everything after it,
 * until `cut()` or `heal()` (e.g. a transaction's `commit`: the test then knows the transaction
 * is open on the server, its statements run, and can cut it there).
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
  /** Delivers each chunk `ms` after it arrived, in order, in both directions (0: none). */
  latency(ms: number): void;
  heal(): void;
  /** Round trips since the start or the last reset (see the module's summary). */
  readonly roundTrips: number;
  resetRoundTrips(): void;
  /** Connections clients opened (refused ones included) since the start or the last reset. */
  readonly connections: number;
  resetConnections(): void;
  /**
   * Resolves when a client sends bytes whose text (Latin-1) `match` accepts; those bytes and all
   * traffic after them are then held, as with `stall()`, until `cut()` or `heal()`.
   */
  holdWhen(match: (text: string) => boolean): Promise<void>;
  /** Starts keeping a copy of what clients send (what `sent()` returns), dropping the last. */
  record(): void;
  /** What clients sent since `record()`, in order (each connection's bytes contiguous per read). */
  sent(): Uint8Array[];
  close(): Promise<void>;
}

const latin1 = new TextDecoder("latin1");

export function startFaultProxy(
  target: { hostname: string; port: number },
): Promise<FaultProxy> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let mode = { kind: "pass" } as Mode;
  let latencyMs = 0;
  let roundTrips = 0;
  let connections = 0;
  let holds: { match: (text: string) => boolean; resolve: () => void }[] = [];
  let recording: Uint8Array[] | undefined;
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();

  const closeQuietly = (c: Deno.Conn) => {
    try {
      c.close();
    } catch { /* already closed */ }
    open.delete(c);
  };
  /** Per connection: who spoke last, so a client send after the server's answer counts once. */
  type Turn = { last: "client" | "server" | "none" };
  const pipe = async (from: Deno.Conn, to: Deno.Conn, side: "client" | "server", turn: Turn) => {
    const buf = new Uint8Array(64 * 1024);
    let delivered: Promise<void> = Promise.resolve();
    let failed = false;
    const writeAll = async (bytes: Uint8Array) => {
      let written = 0;
      while (written < bytes.length) written += await to.write(bytes.subarray(written));
    };
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        if (side === "client" && turn.last !== "client") roundTrips++;
        if (side === "client") recording?.push(buf.slice(0, n));
        turn.last = side;
        if (side === "client" && holds.length) {
          const text = latin1.decode(buf.subarray(0, n));
          const hit = holds.find((h) => h.match(text));
          if (hit) {
            holds = holds.filter((h) => h !== hit);
            mode = { kind: "stall" };
            hit.resolve();
          }
        }
        while (mode.kind === "stall") await new Promise((r) => setTimeout(r, 20));
        if (mode.kind === "cut") break;
        if (mode.kind === "slow") {
          await new Promise((r) => setTimeout(r, (mode as { ms: number }).ms));
        }
        if (latencyMs > 0) {
          // Delivered later, in order, while reading goes on: latency, not a slower stream.
          const bytes = buf.slice(0, n);
          const due = performance.now() + latencyMs;
          delivered = delivered.then(async () => {
            const wait = due - performance.now();
            if (wait > 0) await new Promise((r) => setTimeout(r, wait));
            if (mode.kind === "cut" || failed) return;
            await writeAll(bytes).catch(() => {
              failed = true;
              closeQuietly(from);
              closeQuietly(to);
            });
          });
          continue;
        }
        await delivered;
        await writeAll(buf.subarray(0, n));
      }
      await delivered;
    } catch { /* either side went away */ }
    closeQuietly(from);
    closeQuietly(to);
  };
  const serve = (async () => {
    for await (const client of listener) {
      connections++;
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
        // No Nagle: with latency on, an answer goes on as several delayed writes, and a small
        // one held back until the first is acknowledged waited out the receiver's delayed ACK
        // (40 ms): the far-database list's p99 was 57 ms of which 40 were this proxy's own.
        (client as Deno.TcpConn).setNoDelay(true);
        (upstream as Deno.TcpConn).setNoDelay(true);
        const turn: Turn = { last: "none" };
        await Promise.all([
          pipe(client, upstream, "client", turn),
          pipe(upstream, client, "server", turn),
        ]);
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
    latency(ms: number) {
      latencyMs = ms;
    },
    heal() {
      mode = { kind: "pass" };
      latencyMs = 0;
    },
    get roundTrips() {
      return roundTrips;
    },
    resetRoundTrips() {
      roundTrips = 0;
    },
    get connections() {
      return connections;
    },
    resetConnections() {
      connections = 0;
    },
    holdWhen(match: (text: string) => boolean) {
      return new Promise<void>((resolve) => holds.push({ match, resolve }));
    },
    record() {
      recording = [];
    },
    sent() {
      return [...(recording ?? [])];
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
