/**
 * Structured JSON logs, one line each, with secrets redacted: any field whose name looks like a
 * credential, and any value that looks like a bearer token, JWT, Stripe key or signing secret.
 *
 * On stdout (the default), a line is written at once when none was written in the last
 * `BATCH_MS`; lines that follow within that time are written together at its end, in whole lines
 * of at most `PIPE_BUF` bytes per write (so lines stay intact on a pipe shared with other
 * processes). Under load that is one write per `BATCH_MS` instead of a synchronous write per
 * request. A warning or error is written at once, after the lines before it. Whatever is held
 * is written when the process exits (`unload`, including `Deno.exit`) or dies of an uncaught
 * error.
 *
 * @example
 * ```ts
 * import { createLogger } from "./logger.ts";
 *
 * const log = createLogger({ base: { fn: "status" } });
 * const requestId = crypto.randomUUID();
 * log.info("request", { requestId, route: "/status", status: 200, durationMs: 1.2 });
 * ```
 */

export type Level = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, unknown>;

export interface Logger {
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

const SECRET_KEY = /authorization|cookie|password|secret|token|api[-_]?key|apikey|signature|jwt/i;
const SECRET_VALUE = [
  /Bearer\s+[\w\-.~+/]+=*/gi,
  /eyJ[\w-]+\.[\w-]+\.[\w-]*/g, // JWTs
  /\b(?:sk|rk|pk)_(?:test|live)_[\w]+/g, // Stripe keys
  /\bwhsec_[\w]+/g, // Stripe signing secrets
  /(postgres(?:ql)?:\/\/[^:/\s]+:)[^@\s]+@/g, // passwords in database URLs
];

/** Cheap test for whether a string could hold any of SECRET_VALUE (most log values cannot). */
const MAYBE_SECRET = /bearer|eyJ|_test_|_live_|whsec_|:\/\//i;

/** Returns a copy of `value` with secrets replaced by "[redacted]". */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") {
    if (!MAYBE_SECRET.test(value)) return value;
    let out = value;
    for (const re of SECRET_VALUE) {
      out = out.replace(
        re,
        (_m, keep?: string) => typeof keep === "string" ? `${keep}[redacted]@` : "[redacted]",
      );
    }
    return out;
  }
  if (value === null || typeof value !== "object" || depth > 6) return value;
  if (value instanceof Error) {
    return redact({ name: value.name, message: value.message }, depth + 1);
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  redactInto(out, value as Record<string, unknown>, depth);
  return out;
}

/** Copies `from`'s own fields into `out`, redacted. */
function redactInto(out: Record<string, unknown>, from: Record<string, unknown>, depth: number) {
  for (const k of Object.keys(from)) {
    out[k] = SECRET_KEY.test(k) ? "[redacted]" : redact(from[k], depth + 1);
  }
}

const encoder = new TextEncoder();

/** How long lines that follow a write are held to be written together. */
export const BATCH_MS = 20;
/** Largest write that a pipe keeps whole among other writers' (POSIX `PIPE_BUF` on Linux). */
const PIPE_BUF = 4096;
const LF = 10;

/** Writes whole lines to `sink`, batched as the module's summary says. */
export class LineBatcher {
  readonly #sink: (bytes: Uint8Array) => number;
  readonly #batchMs: number;
  #held: string[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the last write went (`performance.now()`); lines within `batchMs` of it are held. */
  #wroteAt = -Infinity;

  /** `sink` writes some of the bytes and says how many (as `Deno.stdout.writeSync`). */
  constructor(sink: (bytes: Uint8Array) => number, batchMs = BATCH_MS) {
    this.#sink = sink;
    this.#batchMs = batchMs;
  }

  /** Adds a line; `now` writes it (and any held before it) at once. */
  write(line: string, now = false) {
    this.#held.push(line);
    if (this.#timer !== undefined && !now) return; // a window is open: it writes the line
    const wait = this.#wroteAt + this.#batchMs - performance.now();
    if (now || wait <= 0) {
      // Quiet for a window (or told to): the line goes at once, with no timer. The first line of
      // a process (a function's "listening") sets none: Deno loads its Node-compatible timers
      // on the first setTimeout, and a cold start should not pay for that before it answers.
      this.flush();
      this.#wroteAt = performance.now();
      return;
    }
    this.#window(wait);
  }

  /** Writes every held line. */
  flush() {
    if (this.#held.length === 0) return;
    const bytes = encoder.encode(this.#held.join("\n") + "\n");
    this.#held = [];
    let start = 0;
    while (start < bytes.length) {
      let end = bytes.length;
      if (end - start > PIPE_BUF) {
        // Whole lines up to PIPE_BUF; a single longer line goes alone (it never was atomic).
        const cut = bytes.lastIndexOf(LF, start + PIPE_BUF - 1);
        end = (cut >= start ? cut : bytes.indexOf(LF, start)) + 1;
      }
      this.#writeAll(bytes.subarray(start, end));
      start = end;
    }
  }

  /** Lines within `batchMs` of a write are held until then, and go together. */
  #window(wait: number) {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
      this.#wroteAt = performance.now();
    }, wait);
    // Held lines never keep a process alive: exit writes them.
    if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(Number(this.#timer));
  }

  #writeAll(bytes: Uint8Array) {
    let written = 0;
    while (written < bytes.length) written += this.#sink(bytes.subarray(written));
  }
}

let stdoutLines: LineBatcher | undefined;

/** The process's stdout batcher, made on first use; it writes what it holds when the process ends. */
function stdoutBatcher(): LineBatcher {
  if (stdoutLines) return stdoutLines;
  const batcher = new LineBatcher((bytes) => Deno.stdout.writeSync(bytes));
  const flush = () => {
    try {
      batcher.flush();
    } catch { /* stdout is gone: nothing left to tell */ }
  };
  globalThis.addEventListener("unload", flush);
  globalThis.addEventListener("error", flush);
  globalThis.addEventListener("unhandledrejection", flush);
  return stdoutLines = batcher;
}

const stdout = (line: string, level: Level) =>
  stdoutBatcher().write(line, level === "warn" || level === "error");

export interface LoggerOptions {
  /** Fields on every line (function name, instance). */
  base?: Fields;
  /** Where lines go, one call per line; stdout (batched, see the module's summary) by default. */
  write?: (line: string, level: Level) => void;
  /** Lowest level written; "info" by default. */
  level?: Level;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A JSON-lines logger. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const write = opts.write ?? stdout;
  const min = ORDER[opts.level ?? "info"];
  const base = opts.base ?? {};
  // The base fields are the same on every line: redacted once. Each line redacts only its own.
  const safeBase = redact(base) as Fields;
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (ORDER[level] < min) return;
    const record: Fields = { time: new Date().toISOString(), level, msg: redact(msg), ...safeBase };
    if (fields) redactInto(record, fields, 0);
    write(JSON.stringify(record), level);
  };
  return {
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  };
}
