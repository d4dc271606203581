/**
 * Smoke test of the benchmark harness (not a speed test): the open-loop generator sends exactly
 * its schedule to the baseline server running as its own process, its histograms are sane, a
 * generator process speaks its protocol, the HTTP/1.1 parser reads chunked answers, and a
 * server that answers errors or does not listen is counted as failing rather than as fast.
 */
import { assert, assertEquals } from "@std/assert";
import {
  ConnectionPool,
  encodeRequest,
  GeneratorProcess,
  HttpConnection,
  mergeSteps,
  parseResponse,
  runOpenLoop,
  type StepResult,
  type Target,
} from "../../local/bench/load.ts";
import { BASELINE_READY, memoryOf, spawnProcess } from "../../local/bench/scenarios.ts";
import { cpuSplit, sampleCpu } from "../../local/bench/cpu.ts";
import { pgbenchScript, sqlTexts } from "../../local/bench/platform.ts";
import { parseArgs } from "../../local/bench/run.ts";

function assertSaneShape(step: StepResult) {
  for (const p of [step.latency, step.service, step.lag]) {
    // HDR reports a percentile as its bucket's highest value: within 0.1% above the max.
    assert(
      p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max * 1.002,
      JSON.stringify(p),
    );
    assert(p.p50 >= 0);
  }
  // Measured from the intended send time, latency can only be longer than the service time.
  assert(step.latency.max >= step.service.max - 0.01, JSON.stringify([step.latency, step.service]));
  assert(step.generator.cpuPercent >= 0);
}

Deno.test("runOpenLoop sends exactly its schedule to the baseline process and records every answer", async () => {
  const server = await spawnProcess({
    entry: "local/bench/baseline_server.ts",
    env: {},
    ready: BASELINE_READY,
  });
  const target: Target = { hostname: "127.0.0.1", port: Number(new URL(server.url).port) };
  const pool = new ConnectionPool(target, { maxConnections: 16 });
  try {
    const request = encodeRequest(target, { method: "GET", path: "/" });
    const started = performance.now();
    const step = await runOpenLoop({
      pool,
      rate: 200,
      durationMs: 1000,
      requests: () => request,
      expect: [200],
    });
    const elapsed = performance.now() - started;
    assertEquals(step.scheduled, 200);
    assertEquals(step.sent, 200);
    assertEquals(step.ok, 200);
    assertEquals(step.errors, { unexpected: {}, timeouts: 0, network: 0, unsent: 0 });
    assertEquals(step.errorRate, 0);
    assertEquals(step.latency.count, 200);
    assertEquals(step.service.count, 200);
    assertEquals(step.lag.count, 200);
    assertSaneShape(step);
    // Open loop: the last request is due at 995 ms, so the step cannot end before it.
    assert(elapsed >= 990, `ended after ${elapsed} ms`);
    assert(step.generator.connections >= 1 && step.generator.connections <= 16);
    assert(memoryOf(server.pid)!.peakRssMb > 0);
    // Two generators' halves merge into the whole.
    const merged = mergeSteps([step, step]);
    assertEquals(merged.scheduled, 400);
    assertEquals(merged.latency.count, 400);
    assertEquals(merged.latency.p50, step.latency.p50);
  } finally {
    await pool.close();
    await server.stop();
  }
});

Deno.test("a generator process runs a scenario's step over its stdin/stdout protocol", async () => {
  const server = await spawnProcess({
    entry: "local/bench/baseline_server.ts",
    env: {},
    ready: BASELINE_READY,
  });
  const target: Target = { hostname: "127.0.0.1", port: Number(new URL(server.url).port) };
  const gen = await GeneratorProcess.start({
    module: new URL("../../local/bench/scenarios.ts", import.meta.url).href,
    scenario: "baseline",
    params: {},
    target,
    expect: [200],
    index: 0,
    of: 1,
    maxConnections: 8,
  });
  try {
    await gen.prepare({ rate: 100, durationMs: 500, phaseMs: 0 });
    const step = await gen.run(Date.now() + 20);
    assertEquals(step.scheduled, 50);
    assertEquals(step.ok, 50);
    assertSaneShape(step);
  } finally {
    await gen.stop();
    await server.stop();
  }
});

Deno.test("unexpected statuses and a server that does not listen count as errors", async () => {
  const ac = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: ac.signal,
    onListen: () => {},
  }, () => new Response("{}", { status: 503 }));
  const target: Target = { hostname: "127.0.0.1", port: server.addr.port };
  const pool = new ConnectionPool(target, { maxConnections: 4 });
  try {
    const request = encodeRequest(target, { method: "GET", path: "/" });
    const step = await runOpenLoop({
      pool,
      rate: 100,
      durationMs: 200,
      requests: () => request,
      expect: [200],
    });
    assertEquals(step.ok, 0);
    assertEquals(step.errors.unexpected, { "503": 20 });
    assertEquals(step.errorRate, 1);
  } finally {
    await pool.close();
    ac.abort();
    await server.finished;
  }
  // Nothing listens on that port any more.
  const dead = new ConnectionPool(target, { maxConnections: 4 });
  const request = encodeRequest(target, { method: "GET", path: "/" });
  const step = await runOpenLoop({
    pool: dead,
    rate: 100,
    durationMs: 200,
    requests: () => request,
    expect: [200],
    drainMs: 2000,
  });
  await dead.close();
  assertEquals(step.ok, 0);
  assertEquals(step.errors.network + step.errors.timeouts + step.errors.unsent, 20);
});

Deno.test("parseResponse reads Content-Length, chunked and bodiless answers, and waits for the rest", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const cl = enc("HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello");
  assertEquals(parseResponse(cl, cl.length), { status: 201, length: cl.length, close: false });
  assertEquals(parseResponse(cl, cl.length - 1), null);
  const chunked = enc(
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
  );
  assertEquals(parseResponse(chunked, chunked.length), {
    status: 200,
    length: chunked.length,
    close: true,
  });
  assertEquals(parseResponse(chunked, chunked.length - 2), null);
  const withTrailer = enc(
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: 1\r\n\r\n",
  );
  assertEquals(parseResponse(withTrailer, withTrailer.length)?.length, withTrailer.length);
  const noContent = enc("HTTP/1.1 204 No Content\r\nvary: Origin\r\n\r\n");
  assertEquals(parseResponse(noContent, noContent.length), {
    status: 204,
    length: noContent.length,
    close: false,
  });
  let threw = false;
  try {
    parseResponse(enc("garbage\r\n\r\n"), 11);
  } catch {
    threw = true;
  }
  assert(threw, "a malformed status line is an error");
});

Deno.test("the bench's flags are parsed and a bad one is refused", () => {
  const opts = parseArgs([
    "--quick",
    "--scenario",
    "status,baseline",
    "--soak",
    "30",
    "--generators",
    "2",
  ]);
  assertEquals(opts.quick, true);
  assertEquals(opts.scenarios, ["status", "baseline"]);
  assertEquals(opts.soakSeconds, 30);
  assertEquals(opts.generators, 2);
  for (const bad of [["--scenario", "nope"], ["--soak", "0"], ["--fast"]]) {
    let threw = false;
    try {
      parseArgs(bad);
    } catch {
      threw = true;
    }
    assert(threw, bad.join(" "));
  }
});

Deno.test("--no-platform skips the far-database table and the ratios", () => {
  assertEquals(parseArgs([]).platform, true);
  assertEquals(parseArgs(["--no-platform"]).platform, false);
});

Deno.test("the pgbench script is the wire's SQL with per-request values as variables", () => {
  const enc = new TextEncoder();
  const message = (type: string, body: Uint8Array) => {
    const out = new Uint8Array(5 + body.length);
    out[0] = type.charCodeAt(0);
    new DataView(out.buffer).setUint32(1, body.length + 4);
    out.set(body, 5);
    return out;
  };
  const user = "6f1c1a3e-0000-4000-8000-000000000001";
  const key = "0b9d1a3e-1111-4000-8000-000000000002";
  const parse = message("P", enc.encode(`\0select claim(E'${user}', E'${key}')\0\0\0`));
  const query = message(
    "Q",
    enc.encode(`begin; select apply(E'evt_${"a".repeat(24)}', E'cs_test_${"b".repeat(24)}')\0`),
  );
  const texts = sqlTexts([new Uint8Array([...parse, ...message("S", new Uint8Array())]), query]);
  assertEquals(texts.length, 2);
  const script = pgbenchScript(texts, user);
  assert(script.includes("E'00000000-0000-4000-8000-:user'"), script);
  assert(script.includes("E':r1h-0000-4000-9000-:r1'"), script);
  assert(script.includes("begin \\; select apply(E'evt_:r2h:r2', E'cs_test_:r3h:r3');"), script);
  assert(script.includes("\\set r1h random(10000000, 99999999)\n"), script);
  assert(script.includes("\\set r1 random(100000000000, 999999999999)\n"), script);
  assert(!script.includes(key) && !script.includes("a".repeat(24)), script);
});

Deno.test("cpuSplit puts this process's busy second in its group and accounts for every core", () => {
  const before = sampleCpu();
  const until = performance.now() + 300;
  let spin = 0;
  while (performance.now() < until) spin++;
  const split = cpuSplit(before, sampleCpu(), { bench: (pid) => pid === Deno.pid });
  assert(spin > 0);
  if (split.wallMs === 0) return; // no /proc here
  assert(split.groups.bench >= 50, JSON.stringify(split));
  const total = Object.values(split.groups).reduce((a, b) => a + b, 0);
  // Every core's time is in some group (ticks are 10 ms: allow for rounding at the edges).
  assert(Math.abs(total - split.cores * 100) <= 30, JSON.stringify(split));
  assert("ended" in split.groups && "postgres-shared" in split.groups);
});

Deno.test("HttpConnection reports a refusal's error code, and none for a success", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/busy"
        ? Response.json({ error: { code: "DB_BUSY", message: "busy" } }, { status: 503 })
        : Response.json({ ok: true }),
  );
  const target = { hostname: "127.0.0.1" as const, port: server.addr.port };
  const conn = await HttpConnection.open(target);
  try {
    assertEquals(
      await conn.exchange(encodeRequest(target, { method: "GET", path: "/busy" }), 5000),
      503,
    );
    assertEquals(conn.lastErrorCode, "DB_BUSY");
    assertEquals(
      await conn.exchange(encodeRequest(target, { method: "GET", path: "/" }), 5000),
      200,
    );
    assertEquals(conn.lastErrorCode, undefined);
  } finally {
    conn.close();
    await server.shutdown();
  }
});
