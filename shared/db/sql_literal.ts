/**
 * SQL literals, so a statement with values costs one database round trip.
 *
 * Why: connections work through Supabase's transaction pooler, so prepared statements are off
 * (`prepare: false`). postgres.js then sends every statement that has parameters twice over the
 * wire: first Parse + Describe to learn the parameter types, and only after that answer Bind +
 * Execute (connection.js `describeFirst`), two round trips. A statement without parameters goes
 * as one Parse/Bind/Execute/Sync, one round trip. On the platform the database is not on
 * loopback, so the hot paths write their values as literals instead. The quoting is node-postgres'
 * `escapeLiteral` (lib/utils.js), the same rule pg-format uses: an `E'…'` string with `\` and `'`
 * doubled, which means the same whatever `standard_conforming_strings` says. No library is used
 * for it because importing node-postgres into every function for ten lines is not worth it.
 *
 * A request's hot statements (the idempotency claim, the order's record, the webhook's commit)
 * also go as simple queries (`.simple()`): one Query message instead of Parse, Describe, Bind,
 * Execute and Sync, as pgbench sends them. With postgres.js alone on 16 connections running the
 * order's two statements, Postgres's CPU per order fell 5–10 % and the client's about 15 %; through
 * the whole function the gain is within the benchmark's run-to-run spread. A simple query may hold
 * several statements, so only text built from these literals goes that way.
 *
 * Text Postgres cannot store (a NUL character) is refused here with a TypeError: validate input
 * before it gets this far (`isPostgresText`), so bad input is a `400`, never a `500`.
 *
 * @example
 * ```ts
 * import { literal } from "./sql_literal.ts";
 *
 * const text = `select * from internal.rate_limit_hit(${literal("orders:u1")}, 60, 60000)`;
 * // await db.query((sql) => sql.unsafe(text));
 * ```
 */

/** A value that can be written as a literal. */
export type LiteralValue = string | number | bigint | boolean | null | undefined | Date;

/**
 * Whether `s` is text Postgres can store: no NUL character and no lone UTF-16 surrogate (which
 * would not survive encoding to UTF-8 unchanged).
 */
export function isPostgresText(s: string): boolean {
  return !s.includes("\u0000") && s.isWellFormed();
}

/** `s` with NUL characters and lone surrogates replaced by U+FFFD, for text we only record. */
export function toPostgresText(s: string): string {
  return s.toWellFormed().replaceAll("\u0000", "\uFFFD");
}

/**
 * The SQL literal of `value`: `null`, a number, `true`/`false`, or a quoted string (a Date as its
 * ISO string; cast it in the SQL text). Throws TypeError for a non-finite number or text that is
 * not valid for Postgres.
 */
export function literal(value: LiteralValue): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`Not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "boolean") return value ? "true" : "false";
  const text = value instanceof Date ? value.toISOString() : value;
  if (!isPostgresText(text)) {
    throw new TypeError("Text with a NUL character or a lone surrogate cannot reach Postgres");
  }
  return `E'${text.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/** A `jsonb` literal of `value` (JSON text, quoted, cast). */
export function jsonLiteral(value: unknown): string {
  const text = JSON.stringify(value);
  // JSON.stringify writes NUL as \u0000 and lone surrogates as \udXXX escapes, which jsonb refuses.
  if (/(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f])/i.test(text)) {
    throw new TypeError("Text with a NUL character or a lone surrogate cannot reach Postgres");
  }
  return `${literal(text)}::jsonb`;
}
