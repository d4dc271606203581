/**
 * Input validation with zod: JSON bodies and query strings parsed strictly, failures answered
 * `400` with the contract's `issues` list, and no partial input ever reaching a handler.
 *
 * Strict beyond the schema, for every route alike (contract, "Text that reaches Postgres is valid
 * for it"): a string or key holding a NUL character (Postgres `text` cannot store one: SQLSTATE
 * 22021, which would be a 500) or an unpaired UTF-16 surrogate (not Unicode; it would be stored
 * as U+FFFD, silently changed) is refused, and so is a JSON number with more digits than a double
 * keeps, i.e. whose literal is not the value the parsed double reads back as (`9999999.999999999`
 * → 9999999.999999998, `100000000.0000000001` → 100000000, `1e400`): JSON.parse would round it
 * before any schema saw it, so a limit or a precision check would judge a different number from
 * the one sent. Each refusal is a `400 VALIDATION_FAILED` naming the path.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import * as z from "../zod.ts";
 * import { readJson, validate } from "./validation.ts";
 *
 * const OrderSchema = z.strictObject({ symbol: z.string().min(1), qty: z.number().positive() });
 * const PageQuery = z.object({ limit: z.coerce.number().int().min(1).max(100).default(50) });
 * const app = new Hono();
 * app.post("/", async (c) => {
 *   const order = await readJson(c, OrderSchema); // or 400 VALIDATION_FAILED naming each path
 *   const page = validate(PageQuery, c.req.query());
 *   return c.json({ order, page });
 * });
 * ```
 */
import type { Context } from "hono";
import type * as z from "../zod.ts";
import { BadRequest, type Issue, ValidationFailed } from "../errors.ts";

/** Issues reported at most (the rest would only make the answer longer). */
const MAX_ISSUES = 20;

/** The contract's issues from a zod error: dotted path and message, at most 20. */
export function toIssues(error: z.ZodError): Issue[] {
  return error.issues.slice(0, MAX_ISSUES).map((i) => ({
    path: i.path.map(String).join(".") || "(root)",
    message: i.message,
  }));
}

/**
 * Validates `value` or throws ValidationFailed: first that every string and key in it is text
 * Postgres can store (no NUL, no unpaired surrogate), then against `schema`.
 */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const issues = inputIssues(value);
  if (issues.length > 0) throw new ValidationFailed(issues);
  const result = schema.safeParse(value);
  if (!result.success) throw new ValidationFailed(toIssues(result.error));
  return result.data;
}

/**
 * Parses the body as JSON (400 MALFORMED_JSON if it is not) and validates it: text as
 * `validate` checks it, and numbers against their literal (see the module's note).
 */
export async function readJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  return validate(schema, parseJson(await c.req.text()));
}

/**
 * JSON.parse that keeps a number a double cannot hold exactly as an `InexactNumber` (found and
 * reported by `validate`), using the reviver's source text (ES2025 JSON.parse source text access).
 * Throws BadRequest MALFORMED_JSON when `text` is not JSON (or nests deeper than the runtime can).
 */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(
      text,
      (_key, value: unknown, context?: { source?: string }) =>
        typeof value === "number" && context?.source !== undefined &&
          canonicalDecimal(context.source) !== canonicalDecimal(String(value))
          ? new InexactNumber(context.source, value)
          : value,
    );
  } catch (err) {
    // A RangeError is the runtime's stack giving out: nesting a few thousand levels deep.
    throw new BadRequest(
      err instanceof RangeError ? "The body nests too deeply." : "The body is not valid JSON.",
      "MALFORMED_JSON",
    );
  }
}

/** A JSON number whose literal is not the value its double reads back as (`String(n)`). */
export class InexactNumber {
  constructor(readonly source: string, readonly rounded: number) {}
}

/**
 * `-?digits` and a power of ten for a decimal literal, without leading or trailing zeros, so
 * that `1.50`, `15e-1` and `1.5` compare equal; `Infinity` and `NaN` stay as they are (never
 * equal to a JSON literal). Hand-written: the literal is short and its grammar fixed (RFC 8259
 * §6), and no decimal library is needed to compare two spellings.
 */
function canonicalDecimal(literal: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!m) return literal;
  const fraction = m[3] ?? "";
  const all = (m[2] + fraction).replace(/^0+/, "");
  const digits = all.replace(/0+$/, "");
  if (digits === "") return "0"; // -0 and 0 are the same value
  const exponent = Number(m[4] ?? "0") - fraction.length + (all.length - digits.length);
  return `${m[1]}${digits}e${exponent}`;
}

/** A path element, linked to its parent (paths are built only for the few values reported). */
interface Step {
  parent?: Step;
  key: string | number;
}

function pathOf(step: Step | undefined): string {
  const keys: (string | number)[] = [];
  for (let s = step; s; s = s.parent) keys.push(s.key);
  return keys.reverse().map(String).join(".") || "(root)";
}

/** What is wrong with a string as text Postgres stores faithfully, if anything. */
function textProblem(s: string): string | undefined {
  if (s.includes("\u0000")) return "must not contain a NUL character (\\u0000)";
  if (!s.isWellFormed()) return "must not contain an unpaired surrogate (not valid Unicode)";
  return undefined;
}

/**
 * Every NUL, unpaired surrogate (in strings and keys) and inexact number in `value`, at most
 * MAX_ISSUES. Iterative, so a deeply nested body cannot exhaust the stack here.
 */
function inputIssues(value: unknown): Issue[] {
  const issues: Issue[] = [];
  const pending: [unknown, Step | undefined][] = [[value, undefined]];
  while (pending.length > 0 && issues.length < MAX_ISSUES) {
    const [v, at] = pending.pop()!;
    if (typeof v === "string") {
      const problem = textProblem(v);
      if (problem) issues.push({ path: pathOf(at), message: problem });
    } else if (v instanceof InexactNumber) {
      issues.push({
        path: pathOf(at),
        message: Number.isFinite(v.rounded)
          ? `has more precision than a number holds (${
            v.source.slice(0, 40)
          } would become ${v.rounded})`
          : "is out of range for a number",
      });
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) pending.push([v[i], { parent: at, key: i }]);
    } else if (v !== null && typeof v === "object") {
      const entries = Object.entries(v);
      for (const [k] of entries) {
        const problem = textProblem(k);
        if (problem) issues.push({ path: pathOf(at), message: `has a key that ${problem}` });
      }
      for (let i = entries.length - 1; i >= 0; i--) {
        pending.push([entries[i][1], { parent: at, key: entries[i][0] }]);
      }
    }
  }
  return issues.slice(0, MAX_ISSUES);
}
