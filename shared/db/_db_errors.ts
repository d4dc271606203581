/**
 * Which database failures are which: a transient conflict worth re-running, a failed connection
 * (an outage), a schema older than the code (not an outage), or anything else (the caller's).
 *
 * @example
 * ```ts
 * import { classifyDbError } from "./_db_errors.ts";
 *
 * classifyDbError({ code: "40001" }); // "transient": a serialization failure, run it again
 * classifyDbError({ code: "ECONNREFUSED" }); // "connection"
 * classifyDbError({ code: "42P01" }); // "schema": a table the migrations have not created yet
 * ```
 *
 * @module
 */

/** What a database failure means for the caller. */
export type DbErrorKind = "transient" | "connection" | "schema" | "other";

/**
 * SQLSTATEs worth re-running the whole transaction for: deadlock_detected,
 * serialization_failure, too_many_connections, lock_not_available (PostgreSQL, Appendix A).
 */
const TRANSIENT = new Set(["40P01", "40001", "53300", "55P03"]);
/** SQLSTATEs that mean the schema lacks what the code expects (a migration not yet applied). */
const SCHEMA = new Set(["42P01", "42883", "3F000"]);
/** postgres.js and socket error codes that mean the connection itself failed. */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "QUERY_DEADLINE",
]);

/**
 * Classifies a thrown value: SQLSTATE classes first (08 connection exception, 28 invalid
 * authorization, 3D000 no such database and 57P01–57P05 shutdowns are connection failures), then
 * socket and driver codes. A missing table, function or schema is "schema", never "connection":
 * it is not an outage.
 */
export function classifyDbError(err: unknown): DbErrorKind {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === "string" ? e.code : "";
  if (TRANSIENT.has(code)) return "transient";
  if (SCHEMA.has(code)) return "schema";
  if (/^(08|28)/.test(code) || code === "3D000" || /^57P0[1-5]$/.test(code)) return "connection";
  if (CONNECTION_CODES.has(code)) return "connection";
  if (err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.ConnectionReset) {
    return "connection";
  }
  if (typeof e?.message === "string" && /connection (refused|reset)|broken pipe/i.test(e.message)) {
    return "connection";
  }
  return "other";
}

/** Whether `err` is worth re-running the transaction for (the retry policy's predicate). */
export function isTransientDbError(err: unknown): boolean {
  return classifyDbError(err) === "transient";
}

/** A short, secret-free name for a failure, for health reports: its code, else its class name. */
export function describeDbError(err: unknown): string {
  const e = err as { code?: unknown };
  return typeof e?.code === "string" ? e.code : err instanceof Error ? err.name : "unknown";
}
