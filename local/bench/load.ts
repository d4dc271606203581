/**
 * The benchmark's load generator: an open-loop schedule at a fixed arrival rate over a bounded
 * pool of keep-alive HTTP/1.1 connections, with latency recorded in HDR histograms from each
 * request's INTENDED send time, as wrk2 does, so a stalled server cannot hide its stall by
 * slowing the generator down (coordinated omission, Gil Tene: "How NOT to measure latency").
 *
 * It speaks HTTP/1.1 itself over `Deno.connect` rather than through `fetch`: measured here,
 * `fetch` opened a connection per concurrent request under open-loop load and fell behind its
 * schedule at 2,000 requests/s, while a plain keep-alive socket holds several times that at a
 * fraction of the CPU. Every request is encoded before the timed run; only writes and reads
 * happen inside it. Traffic goes to 127.0.0.1 only.
 *
 * It runs in-process (`runOpenLoop`, used by the smoke test) or as its own process (`deno run
 * local/bench/load.ts`, driven over stdin/stdout by `GeneratorProcess`) so the load never
 * shares an event loop with the server under test.
 *
 * @example
 * const pool = new ConnectionPool({ hostname: "127.0.0.1", port }, { maxConnections: 64 });
 * const request = encodeRequest(pool.target, { method: "GET", path: "/" });
 * const step = await runOpenLoop({ pool, rate: 200, durationMs: 1000, requests: () => request, expect: [200] });
 * step.latency.p99; // ms, from the intended send time
 * await pool.close();
 */
import * as hdr from "hdr-histogram-js";
import process from "node:process";

/** Where the load goes: loopback only. */
export interface Target {
  hostname: "127.0.0.1";
  port: number;
}

/** A request before encoding. */
export interface RequestSpec {
  method: string;
  /** Path and query, e.g. `/functions/v1/status`. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

const encoder = new TextEncoder();

/** Encodes an HTTP/1.1 request (keep-alive, Content-Length when there is a body). */
export function encodeRequest(target: Target, spec: RequestSpec): Uint8Array {
  const body = typeof spec.body === "string" ? encoder.encode(spec.body) : spec.body;
  let head = `${spec.method} ${spec.path} HTTP/1.1\r\nhost: ${target.hostname}:${target.port}\r\n`;
  for (const [name, value] of Object.entries(spec.headers ?? {})) {
    if (/[\r\n]/.test(name + value)) throw new Error(`Header ${name} contains a line break`);
    head += `${name}: ${value}\r\n`;
  }
  if (body) head += `content-length: ${body.byteLength}\r\n`;
  head += "\r\n";
  const headBytes = encoder.encode(head);
  if (!body) return headBytes;
  const out = new Uint8Array(headBytes.byteLength + body.byteLength);
  out.set(headBytes);
  out.set(body, headBytes.byteLength);
  return out;
}

/** One parsed response: its status, its length in the buffer, whether the server closes. */
export interface ParsedResponse {
  status: number;
  length: number;
  close: boolean;
}

const CR = 13;
const LF = 10;
const latin1 = new TextDecoder("latin1");
/** Larger headers than this are a broken server, not a slow one. */
const MAX_HEAD_BYTES = 64 * 1024;

function indexOfCrlf(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 1 < end; i++) if (buf[i] === CR && buf[i + 1] === LF) return i;
  return -1;
}

function indexOfBlankLine(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 3 < end; i++) {
    if (buf[i] === CR && buf[i + 1] === LF && buf[i + 2] === CR && buf[i + 3] === LF) return i;
  }
  return -1;
}

/**
 * Parses one complete HTTP/1.1 response from `buf[0, end)`: null while incomplete. Handles
 * `Content-Length`, `Transfer-Encoding: chunked` (RFC 9112 §7.1, trailers skipped) and the
 * bodiless statuses; throws on anything malformed.
 */
export function parseResponse(buf: Uint8Array, end: number, head = false): ParsedResponse | null {
  const blank = indexOfBlankLine(buf, 0, end);
  if (blank < 0) {
    if (end > MAX_HEAD_BYTES) throw new Error("Response headers are larger than 64 KiB");
    return null;
  }
  // "HTTP/1.1 200 OK"
  const d0 = buf[9] - 48, d1 = buf[10] - 48, d2 = buf[11] - 48;
  if (buf[0] !== 72 || !(d0 >= 1 && d0 <= 5 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9)) {
    throw new Error("Malformed status line");
  }
  const status = d0 * 100 + d1 * 10 + d2;
  let contentLength = -1;
  let chunked = false;
  let close = false;
  // The header lines, decoded once (bytes as Latin-1, as RFC 9110 §5.5 treats them).
  const lines = latin1.decode(buf.subarray(0, blank)).toLowerCase().split("\r\n");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") contentLength = Number(value);
    else if (name === "transfer-encoding") chunked = value.split(",").at(-1)!.trim() === "chunked";
    else if (name === "connection") close = value.split(",").some((t) => t.trim() === "close");
  }
  const bodyStart = blank + 4;
  if (head || status === 204 || status === 304 || status < 200) {
    return { status, length: bodyStart, close };
  }
  if (chunked) {
    let pos = bodyStart;
    for (let chunks = 0; chunks < 1_000_000; chunks++) {
      const lineEnd = indexOfCrlf(buf, pos, end);
      if (lineEnd < 0) return null;
      const size = parseInt(String.fromCharCode(...buf.subarray(pos, lineEnd)).split(";")[0], 16);
      if (!Number.isFinite(size) || size < 0) throw new Error("Malformed chunk size");
      pos = lineEnd + 2;
      if (size === 0) {
        if (pos + 1 < end && buf[pos] === CR && buf[pos + 1] === LF) {
          return { status, length: pos + 2, close };
        }
        const trailerEnd = indexOfBlankLine(buf, pos, end);
        return trailerEnd < 0 ? null : { status, length: trailerEnd + 4, close };
      }
      pos += size + 2;
      if (pos > end) return null;
    }
    throw new Error("Too many chunks");
  }
  if (contentLength < 0 || !Number.isSafeInteger(contentLength)) {
    throw new Error("Response has neither Content-Length nor chunked encoding");
  }
  return bodyStart + contentLength <= end
    ? { status, length: bodyStart + contentLength, close }
    : null;
}

/** Largest response a connection buffers (the benchmark's answers are a few hundred bytes). */
const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

/** A keep-alive HTTP/1.1 connection that carries one request at a time. */
export class HttpConnection {
  #conn: Deno.TcpConn;
  #buf = new Uint8Array(16 * 1024);
  #len = 0;
  closed = false;
  /** The error code (`{"error":{"code":…}}`) of the last answer of 400 or more, if it had one. */
  lastErrorCode: string | undefined;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connects to the target (loopback only). */
  static async open(target: Target): Promise<HttpConnection> {
    if (target.hostname !== "127.0.0.1") throw new Error(`Refusing to load ${target.hostname}`);
    const conn = await Deno.connect({ hostname: target.hostname, port: target.port });
    conn.setNoDelay(true);
    return new HttpConnection(conn);
  }

  /** Writes one request and reads its whole response; the status. Closes itself on any error. */
  async exchange(request: Uint8Array, timeoutMs: number, head = false): Promise<number> {
    const timer = setTimeout(() => this.close(), timeoutMs);
    try {
      let written = 0;
      while (written < request.byteLength) {
        written += await this.#conn.write(request.subarray(written));
      }
      for (let reads = 0; reads < 100_000; reads++) {
        const parsed = this.#len > 0 ? parseResponse(this.#buf, this.#len, head) : null;
        if (parsed) {
          this.lastErrorCode = parsed.status >= 400
            ? /"code":"([\w.-]+)"/.exec(latin1.decode(this.#buf.subarray(0, parsed.length)))?.[1]
            : undefined;
          this.#buf.copyWithin(0, parsed.length, this.#len);
          this.#len -= parsed.length;
          if (parsed.close) this.close();
          return parsed.status;
        }
        if (this.#len === this.#buf.byteLength) {
          if (this.#buf.byteLength >= MAX_RESPONSE_BYTES) throw new Error("Response too large");
          const bigger = new Uint8Array(this.#buf.byteLength * 2);
          bigger.set(this.#buf);
          this.#buf = bigger;
        }
        const n = await this.#conn.read(this.#buf.subarray(this.#len));
        if (n === null) throw new Error("Connection closed by the server");
        this.#len += n;
      }
      throw new Error("Response never completed");
    } catch (err) {
      this.close();
      throw this.closed && err instanceof Deno.errors.BadResource ? new TimeoutError() : err;
    } finally {
      clearTimeout(timer);
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

class TimeoutError extends Error {
  constructor() {
    super("Request timed out");
  }
}

/** At most `maxConnections` keep-alive connections, kept between steps so each step starts warm. */
export class ConnectionPool {
  readonly target: Target;
  readonly maxConnections: number;
  readonly idle: HttpConnection[] = [];
  /** Every open connection, idle or busy. */
  readonly all = new Set<HttpConnection>();
  /** Connections being opened. */
  opening = 0;
  /** Connections opened since creation (a high number means the server kept closing them). */
  opened = 0;

  constructor(target: Target, opts: { maxConnections?: number } = {}) {
    this.target = { ...target };
    this.maxConnections = opts.maxConnections ?? 128;
  }

  /** Open connections plus those being opened. */
  get size(): number {
    return this.all.size + this.opening;
  }

  /** Closes every connection (busy ones fail their request). */
  closeAll() {
    this.idle.length = 0;
    for (const conn of this.all) conn.close();
    this.all.clear();
  }

  async close() {
    this.closeAll();
    // Let the closes reach the runtime before a test's resource sanitizer looks.
    await new Promise((r) => setTimeout(r, 0));
  }
}

/** Latency percentiles in milliseconds. */
export interface Percentiles {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Microsecond histogram, 1 µs to 5 min, 3 significant digits (±0.1%). */
export function newHistogram(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 300_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
  });
}

/** Records a duration in ms into a µs histogram (clamped to the trackable range). */
function record(h: hdr.Histogram, ms: number) {
  h.recordValue(Math.min(300_000_000, Math.max(1, Math.round(ms * 1000))));
}

/** The percentiles of a µs histogram, in ms. */
export function percentiles(h: hdr.Histogram): Percentiles {
  const at = (p: number) => h.totalCount ? h.getValueAtPercentile(p) / 1000 : 0;
  return {
    count: h.totalCount,
    p50: at(50),
    p95: at(95),
    p99: at(99),
    p999: at(99.9),
    max: h.totalCount ? h.maxValue / 1000 : 0,
    mean: h.totalCount ? h.mean / 1000 : 0,
  };
}

/** What one open-loop step measured. */
export interface StepResult {
  /** Requests per second scheduled. */
  rate: number;
  durationMs: number;
  /** Requests the schedule called for. */
  scheduled: number;
  /** Requests written (or failed while writing). */
  sent: number;
  /** Answered with an expected status. */
  ok: number;
  errors: {
    /** Answers with another status, by status. */
    unexpected: Record<string, number>;
    timeouts: number;
    /** Connection refused or reset, malformed answers. */
    network: number;
    /** Scheduled but never sent before the step's hard deadline. */
    unsent: number;
  };
  /** Errors over scheduled requests. */
  errorRate: number;
  /** Expected answers per second of the step. */
  achievedRps: number;
  /** From the intended send time to the full answer: the figure that counts. */
  latency: Percentiles;
  /** From the actual write to the full answer (what a closed-loop tool would report). */
  service: Percentiles;
  /** How late the generator put each request on its queue (timer resolution, a busy loop). */
  lag: Percentiles;
  generator: {
    /** CPU of the generator process over the step, percent of one core. */
    cpuPercent: number;
    maxQueue: number;
    connections: number;
    connectionsOpened: number;
    /** The generator itself fell behind: lag p99 over LAG_LIMIT_MS or requests left unsent. */
    behindSchedule: boolean;
  };
  /** Compressed HDR histograms (µs), for merging the steps of several generator processes. */
  histograms: { latency: string; service: string; lag: string };
}

/** A generator whose queueing lag p99 is over this did not keep the schedule. */
export const LAG_LIMIT_MS = 10;

export interface OpenLoopOptions {
  pool: ConnectionPool;
  /** Requests per second. */
  rate: number;
  durationMs: number;
  /** The encoded request number `i` (0-based within the step); must be ready (pre-built). */
  requests: (i: number) => Uint8Array;
  /** Statuses that count as success. */
  expect: number[];
  /** HEAD requests (no body in the answer). */
  head?: boolean;
  /** `performance.now()` at which the first request is due; default 5 ms from now. */
  startAt?: number;
  /** Offset of this generator's schedule, in ms (several generators interleave). */
  phaseMs?: number;
  /** Per-request deadline. Default 5,000 ms. */
  timeoutMs?: number;
  /** How long after the schedule ends answers are awaited. Default 5,000 ms. */
  drainMs?: number;
  /** Called every `intervalMs` with that interval's latency (soak runs). */
  intervalMs?: number;
  onInterval?: (
    interval: { atMs: number; latency: Percentiles; ok: number; errors: number },
  ) => void;
  /** Called (not awaited) as the schedule reaches request `i`, to prepare later ones. */
  onProgress?: (i: number) => void;
}

/**
 * Runs one open-loop step: request `i` is due at `startAt + phaseMs + i * 1000 / rate`, is put
 * on a FIFO queue when due and written by the first free connection; its latency runs from
 * when it was due. Bounded: `rate * durationMs / 1000` requests, then at most `drainMs` more.
 */
export async function runOpenLoop(opts: OpenLoopOptions): Promise<StepResult> {
  const { pool, rate, durationMs } = opts;
  if (!(rate > 0 && durationMs > 0)) throw new Error(`Bad step: ${rate}/s for ${durationMs} ms`);
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const drainMs = opts.drainMs ?? 5_000;
  const total = Math.max(1, Math.round(rate * durationMs / 1000));
  const interval = 1000 / rate;
  const start = (opts.startAt ?? performance.now() + 5) + (opts.phaseMs ?? 0);
  const hardStop = start + durationMs + drainMs;
  const due = (i: number) => start + i * interval;

  const latency = newHistogram();
  const service = newHistogram();
  const lag = newHistogram();
  let windowLatency = opts.onInterval ? newHistogram() : undefined;
  let windowOk = 0, windowErrors = 0;
  const result = {
    ok: 0,
    unexpected: {} as Record<string, number>,
    timeouts: 0,
    network: 0,
  };
  const queue = new Int32Array(total);
  let queueHead = 0, queueTail = 0, maxQueue = 0;
  let next = 0, settled = 0, sent = 0;
  let wake: (() => void) | undefined;

  const settle = () => {
    settled++;
    if (settled === total) wake?.();
  };

  async function work(conn: HttpConnection) {
    while (queueHead < queueTail && performance.now() < hardStop) {
      const i = queue[queueHead++];
      const written = performance.now();
      sent++;
      try {
        const status = await conn.exchange(opts.requests(i), timeoutMs, opts.head);
        const now = performance.now();
        record(latency, now - due(i));
        record(service, now - written);
        if (windowLatency) record(windowLatency, now - due(i));
        if (opts.expect.includes(status)) {
          result.ok++;
          windowOk++;
        } else {
          result.unexpected[status] = (result.unexpected[status] ?? 0) + 1;
          windowErrors++;
        }
      } catch (err) {
        // A failure took at least this long: it counts in the latency too.
        record(latency, performance.now() - due(i));
        if (err instanceof TimeoutError) result.timeouts++;
        else result.network++;
        windowErrors++;
      }
      settle();
      if (conn.closed) {
        pool.all.delete(conn);
        return dispatch();
      }
    }
    if (conn.closed) pool.all.delete(conn);
    else pool.idle.push(conn);
  }

  function dispatch() {
    while (queueHead < queueTail && pool.idle.length > 0) work(pool.idle.pop()!);
    // Open more connections while requests wait, up to the pool's bound.
    let waiting = queueTail - queueHead - pool.opening;
    while (waiting > 0 && pool.size < pool.maxConnections) {
      pool.opening++;
      pool.opened++;
      waiting--;
      HttpConnection.open(pool.target).then((conn) => {
        pool.opening--;
        pool.all.add(conn);
        return work(conn);
      }, () => {
        pool.opening--;
        // Nothing listens: fail one queued request so a dead server ends the step quickly.
        if (queueHead < queueTail) {
          queueHead++;
          sent++;
          result.network++;
          windowErrors++;
          settle();
        }
      });
    }
  }

  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  let nextWindow = start + (opts.intervalMs ?? Infinity);
  // The schedule: bounded by `total` and by `hardStop`.
  while (next < total) {
    const now = performance.now();
    if (now >= hardStop) break;
    while (next < total && due(next) <= now) {
      record(lag, now - due(next));
      queue[queueTail++] = next++;
    }
    maxQueue = Math.max(maxQueue, queueTail - queueHead);
    dispatch();
    opts.onProgress?.(next);
    if (windowLatency && now >= nextWindow) {
      opts.onInterval!({
        atMs: Math.round(nextWindow - start),
        latency: percentiles(windowLatency),
        ok: windowOk,
        errors: windowErrors,
      });
      windowLatency = newHistogram();
      windowOk = windowErrors = 0;
      nextWindow += opts.intervalMs!;
    }
    if (next < total) {
      // Deno's timers fire about every 2 ms here; requests that fall due meanwhile go out
      // together, and the delay is in their latency (and in `lag`).
      await new Promise((r) => setTimeout(r, Math.max(0, due(next) - performance.now())));
    }
  }
  const unsent = total - next;
  settled += unsent;
  // Drain: wait for the answers, at most until hardStop.
  if (settled < total) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, hardStop - performance.now()));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  wake = undefined;
  // Requests still queued or in flight at the hard stop are timeouts; their connections close.
  const stuck = total - settled;
  const counted = { ...result, unexpected: { ...result.unexpected } };
  if (stuck > 0) {
    counted.timeouts += stuck;
    pool.closeAll();
    // Each was due before the schedule ended: at least this late (a lower bound).
    const atLeast = performance.now() - (start + durationMs);
    for (let k = 0; k < stuck; k++) record(latency, atLeast);
  }
  if (windowLatency && windowLatency.totalCount > 0) {
    opts.onInterval!({
      atMs: Math.round(nextWindow - start),
      latency: percentiles(windowLatency),
      ok: windowOk,
      errors: windowErrors,
    });
  }
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - wall0;
  const errors = Object.values(counted.unexpected).reduce((a, b) => a + b, 0) + counted.timeouts +
    counted.network + unsent;
  const lagP = percentiles(lag);
  return {
    rate,
    durationMs,
    scheduled: total,
    sent,
    ok: counted.ok,
    errors: {
      unexpected: counted.unexpected,
      timeouts: counted.timeouts,
      network: counted.network,
      unsent,
    },
    errorRate: errors / total,
    achievedRps: counted.ok / (durationMs / 1000),
    latency: percentiles(latency),
    service: percentiles(service),
    lag: lagP,
    generator: {
      cpuPercent: Math.round((cpu.user + cpu.system) / 1000 / wallMs * 1000) / 10,
      maxQueue,
      connections: pool.size,
      connectionsOpened: pool.opened,
      behindSchedule: lagP.p99 > LAG_LIMIT_MS || unsent > 0,
    },
    histograms: {
      latency: hdr.encodeIntoCompressedBase64(latency),
      service: hdr.encodeIntoCompressedBase64(service),
      lag: hdr.encodeIntoCompressedBase64(lag),
    },
  };
}

/** One step measured by several generator processes, as one result. */
export function mergeSteps(steps: StepResult[]): StepResult {
  if (steps.length === 1) return steps[0];
  const merged = (key: keyof StepResult["histograms"]) => {
    const h = newHistogram();
    for (const s of steps) h.add(hdr.decodeFromCompressedBase64(s.histograms[key]));
    return h;
  };
  const latency = merged("latency"), service = merged("service"), lag = merged("lag");
  const sum = (f: (s: StepResult) => number) => steps.reduce((a, s) => a + f(s), 0);
  const unexpected: Record<string, number> = {};
  for (const s of steps) {
    for (const [k, v] of Object.entries(s.errors.unexpected)) {
      unexpected[k] = (unexpected[k] ?? 0) + v;
    }
  }
  const scheduled = sum((s) => s.scheduled);
  const errorCount = sum((s) => s.errorRate * s.scheduled);
  const lagP = percentiles(lag);
  return {
    rate: sum((s) => s.rate),
    durationMs: steps[0].durationMs,
    scheduled,
    sent: sum((s) => s.sent),
    ok: sum((s) => s.ok),
    errors: {
      unexpected,
      timeouts: sum((s) => s.errors.timeouts),
      network: sum((s) => s.errors.network),
      unsent: sum((s) => s.errors.unsent),
    },
    errorRate: Math.round(errorCount) / scheduled,
    achievedRps: sum((s) => s.achievedRps),
    latency: percentiles(latency),
    service: percentiles(service),
    lag: lagP,
    generator: {
      // Per process; the busiest one is the one that limits.
      cpuPercent: Math.max(...steps.map((s) => s.generator.cpuPercent)),
      maxQueue: sum((s) => s.generator.maxQueue),
      connections: sum((s) => s.generator.connections),
      connectionsOpened: sum((s) => s.generator.connectionsOpened),
      behindSchedule: steps.some((s) => s.generator.behindSchedule),
    },
    histograms: {
      latency: hdr.encodeIntoCompressedBase64(latency),
      service: hdr.encodeIntoCompressedBase64(service),
      lag: hdr.encodeIntoCompressedBase64(lag),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Generator processes

/** Builds a scenario's requests inside a generator process, ahead of the timed run. */
export interface RequestSource {
  /** Encoded requests `[from, to)` of the generator's whole sequence (indexes never repeat). */
  build(from: number, to: number): Promise<Uint8Array[]>;
}

/** What a generator process is told to load. */
export interface GeneratorJob {
  /** Module (absolute file URL) whose `requestSource(name, params, target, gen)` builds requests. */
  module: string;
  scenario: string;
  params: unknown;
  target: Target;
  expect: number[];
  head?: boolean;
  /** This generator's number and how many there are. */
  index: number;
  of: number;
  maxConnections: number;
}

/** A step for one generator: its share of the rate; starts at `startAtEpochMs`. */
export interface GeneratorStep {
  rate: number;
  durationMs: number;
  /** Phase of this generator within the total schedule, ms. */
  phaseMs: number;
  intervalMs?: number;
}

type Message =
  | { type: "ready" }
  | { type: "prepared" }
  | { type: "interval"; atMs: number; latency: Percentiles; ok: number; errors: number }
  | { type: "result"; result: StepResult }
  | { type: "error"; message: string };

/** How long a request source may take to build a step's requests. */
const PREPARE_TIMEOUT_MS = 120_000;

/** A generator running as its own `deno run local/bench/load.ts` process. */
export class GeneratorProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #messages: Message[] = [];
  #notify?: () => void;
  #ended = false;
  readonly stderr: string[] = [];
  readonly pid: number;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.pid = child.pid;
    this.#writer = child.stdin.getWriter();
    (async () => {
      let buffered = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffered += chunk;
        const lines = buffered.split("\n");
        buffered = lines.pop()!;
        for (const line of lines) if (line.trim()) this.#messages.push(JSON.parse(line));
        this.#notify?.();
      }
      this.#ended = true;
      this.#notify?.();
    })();
    (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr.push(chunk);
        if (this.stderr.length > 200) this.stderr.shift();
      }
    })();
  }

  /** Spawns the process and sends it its job; resolves when its request source is ready. */
  static async start(job: GeneratorJob): Promise<GeneratorProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `--config=${new URL("../../deno.json", import.meta.url).pathname}`,
        new URL(import.meta.url).pathname,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const gen = new GeneratorProcess(child);
    try {
      await gen.#send({ cmd: "init", job });
      await gen.#expect("ready", 60_000);
    } catch (err) {
      await gen.stop();
      throw err;
    }
    return gen;
  }

  /** Builds the step's requests, then waits for `go`. */
  async prepare(step: GeneratorStep): Promise<void> {
    await this.#send({ cmd: "prepare", step });
    await this.#expect("prepared", PREPARE_TIMEOUT_MS);
  }

  /** Runs the prepared step from `startAtEpochMs`; `onInterval` gets soak intervals. */
  async run(
    startAtEpochMs: number,
    onInterval?: (m: Extract<Message, { type: "interval" }>) => void,
  ): Promise<StepResult> {
    await this.#send({ cmd: "go", startAtEpochMs });
    for (let i = 0; i < 100_000; i++) {
      const m = await this.#next(600_000);
      if (m.type === "interval") onInterval?.(m);
      else if (m.type === "result") return m.result;
      else throw new Error(`Generator: unexpected ${JSON.stringify(m)}`);
    }
    throw new Error("Generator sent too many messages");
  }

  async stop(): Promise<void> {
    try {
      await this.#send({ cmd: "exit" });
      await this.#writer.close();
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await this.#child.status;
    clearTimeout(timer);
  }

  async #send(message: unknown) {
    await this.#writer.write(encoder.encode(JSON.stringify(message) + "\n"));
  }

  async #expect(type: Message["type"], timeoutMs: number) {
    const m = await this.#next(timeoutMs);
    if (m.type !== type) {
      throw new Error(
        `Generator: expected ${type}, got ${JSON.stringify(m)}\n${this.stderr.join("")}`,
      );
    }
  }

  async #next(timeoutMs: number): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    while (this.#messages.length === 0) {
      if (this.#ended) throw new Error(`Generator exited:\n${this.stderr.join("")}`);
      if (Date.now() > deadline) throw new Error("Generator did not answer in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.#notify = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.#messages.shift()!;
  }
}

/** The process side: reads commands from stdin, answers JSON lines on stdout. */
async function generatorMain() {
  const out = (m: Message) => Deno.stdout.writeSync(encoder.encode(JSON.stringify(m) + "\n"));
  let job: GeneratorJob | undefined;
  let source: RequestSource | undefined;
  let pool: ConnectionPool | undefined;
  let built:
    | { step: GeneratorStep; from: number; requests: Uint8Array[]; total: number }
    | undefined;
  /** The generator's position in its endless request sequence (keys and ids never repeat). */
  let sequence = 0;
  let buffered = "";
  try {
    for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        const cmd = JSON.parse(line);
        if (cmd.cmd === "init") {
          job = cmd.job as GeneratorJob;
          const mod = await import(job.module);
          source = await mod.requestSource(job.scenario, job.params, job.target, {
            index: job.index,
            of: job.of,
          });
          pool = new ConnectionPool(job.target, { maxConnections: job.maxConnections });
          out({ type: "ready" });
        } else if (cmd.cmd === "prepare") {
          const step = cmd.step as GeneratorStep;
          const total = Math.max(1, Math.round(step.rate * step.durationMs / 1000));
          // Long runs (soak) build ahead in chunks; a step builds everything before it starts.
          const chunk = Math.max(1, Math.round(step.rate * 20));
          const from = sequence;
          const requests = await source!.build(from, from + Math.min(total, chunk * 2));
          built = { step, from, requests, total };
          out({ type: "prepared" });
        } else if (cmd.cmd === "go") {
          const { step, from, requests, total } = built!;
          const chunk = Math.max(1, Math.round(step.rate * 20));
          let building: Promise<void> | undefined;
          let released = 0;
          const result = await runOpenLoop({
            pool: pool!,
            rate: step.rate,
            durationMs: step.durationMs,
            phaseMs: step.phaseMs,
            startAt: performance.now() + (cmd.startAtEpochMs - Date.now()),
            requests: (i) => requests[i],
            expect: job!.expect,
            head: job!.head,
            intervalMs: step.intervalMs,
            onInterval: step.intervalMs ? (m) => out({ type: "interval", ...m }) : undefined,
            onProgress: (i) => {
              // Keep a chunk ahead of the schedule; drop requests long since sent.
              if (!building && requests.length < total && i + chunk > requests.length) {
                const lo = from + requests.length;
                building = source!.build(lo, from + Math.min(total, requests.length + chunk))
                  .then((more) => {
                    for (const r of more) requests.push(r);
                    building = undefined;
                  });
              }
              for (; released < i - chunk; released++) {
                (requests as (Uint8Array | undefined)[])[released] = undefined;
              }
            },
          });
          await building;
          sequence = from + total;
          built = undefined;
          out({ type: "result", result });
        } else if (cmd.cmd === "exit") {
          await pool?.close();
          Deno.exit(0);
        }
      }
    }
  } catch (err) {
    out({ type: "error", message: err instanceof Error ? err.stack ?? err.message : String(err) });
    Deno.exit(1);
  }
}

// Not awaited: scenarios.ts imports this module, and a top-level await here would make that
// dynamic import wait for this module forever.
if (import.meta.main) generatorMain();
