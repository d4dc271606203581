/**
 * Input validation with zod: JSON bodies and query strings parsed strictly, failures answered
 * `400` with the contract's `issues` list, and no partial input ever reaching a handler.
 *
 * @example
 * const order = await readJson(c, OrderSchema);
 */
import type { Context } from "hono";
import type { z } from "zod";
import { BadRequest, type Issue, ValidationFailed } from "./errors.ts";

/** The contract's issues from a zod error: dotted path and message, at most 20. */
export function toIssues(error: z.ZodError): Issue[] {
  return error.issues.slice(0, 20).map((i) => ({
    path: i.path.map(String).join(".") || "(root)",
    message: i.message,
  }));
}

/** Validates `value` or throws ValidationFailed. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ValidationFailed(toIssues(result.error));
  return result.data;
}

/** Parses the body as JSON (400 MALFORMED_JSON if it is not) and validates it. */
export async function readJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const text = await c.req.text();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BadRequest("The body is not valid JSON.", "MALFORMED_JSON");
  }
  return validate(schema, value);
}
