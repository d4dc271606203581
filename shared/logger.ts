/**
 * Structured JSON logs, one line each, with secrets redacted: any field whose name looks like a
 * credential, and any value that looks like a bearer token, JWT, Stripe key or signing secret.
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
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) ? "[redacted]" : redact(v, depth + 1);
  }
  return out;
}

const encoder = new TextEncoder();
const stdout = (line: string) => Deno.stdout.writeSync(encoder.encode(line + "\n"));

export interface LoggerOptions {
  /** Fields on every line (function name, instance). */
  base?: Fields;
  /** Where lines go; stdout by default. */
  write?: (line: string) => void;
  /** Lowest level written; `LOG_LEVEL` or "info". */
  level?: Level;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A JSON-lines logger. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const write = opts.write ?? stdout;
  const min = ORDER[opts.level ?? "info"];
  const base = opts.base ?? {};
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (ORDER[level] < min) return;
    const record = redact({ time: new Date().toISOString(), level, msg, ...base, ...fields });
    write(JSON.stringify(record));
  };
  return {
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  };
}
