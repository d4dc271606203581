/**
 * Environment validation at boot: each function declares the variables it needs as a zod
 * schema; `parseEnv` reports every missing or malformed one at once, by name, never by value.
 *
 * @example
 * ```ts
 * import * as z from "./zod.ts";
 * import { origins, parseEnv, secret } from "./env.ts";
 *
 * // Throws ConfigError naming every variable that is missing or malformed.
 * const env = parseEnv(
 *   z.object({ FRONTEND_URL: origins, SUPABASE_SERVICE_ROLE_KEY: secret(20) }),
 *   Deno.env.toObject(),
 * );
 * env.FRONTEND_URL; // string[]
 * ```
 */
import * as z from "./zod.ts";

/** Configuration that does not validate; `problems` name variables, never their values. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`Invalid configuration: ${problems.join("; ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** A secret of at least `min` characters. */
export const secret = (min = 1) => z.string().min(min, `must be at least ${min} characters`);

/** An http(s) URL without a trailing slash. */
export const httpUrl = z.string().url("must be an http(s) URL").refine(
  (v) => /^https?:\/\//.test(v),
  "must be an http(s) URL",
).transform((v) => v.replace(/\/+$/, ""));

/** A postgres:// or postgresql:// URL. */
export const postgresUrl = z.string().regex(/^postgres(ql)?:\/\/\S+$/, "must be a postgres:// URL");

/** `FRONTEND_URL`: a comma-separated list of exact origins (`scheme://host[:port]`). */
export const origins = z.string().transform((value, ctx) => {
  const list = value.split(",").map((v) => v.trim()).filter(Boolean);
  const out: string[] = [];
  for (const item of list) {
    let url: URL | undefined;
    try {
      url = new URL(item);
    } catch { /* reported below */ }
    if (!url || !/^https?:$/.test(url.protocol) || url.origin !== item.replace(/\/$/, "")) {
      ctx.addIssue({ code: "custom", message: "must list origins as scheme://host[:port]" });
      return z.NEVER;
    }
    out.push(url.origin);
  }
  if (out.length === 0) {
    ctx.addIssue({ code: "custom", message: "must list at least one origin" });
    return z.NEVER;
  }
  return out;
});

/** A JSON object of key names to keys (`SUPABASE_SECRET_KEYS`: `{"default": "sb_secret_…"}`). */
export const jsonKeyMap = z.string().transform((value, ctx) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch { /* reported below */ }
  const keys = parsed && typeof parsed === "object" && !Array.isArray(parsed)
    ? Object.values(parsed)
    : [];
  if (!keys.length || !keys.every((k) => typeof k === "string" && k.length >= 20)) {
    ctx.addIssue({ code: "custom", message: "must be a JSON object of keys" });
    return z.NEVER;
  }
  return keys as string[];
});

/** A JSON Web Key Set (`SUPABASE_JWKS`: `{"keys": [...]}`) of public keys. */
export const jwks = z.string().transform((value, ctx) => {
  let parsed: { keys?: unknown } | undefined;
  try {
    parsed = JSON.parse(value);
  } catch { /* reported below */ }
  const keys = parsed?.keys;
  if (!Array.isArray(keys) || !keys.every((k) => k && typeof k === "object" && "kty" in k)) {
    ctx.addIssue({ code: "custom", message: 'must be a JSON Web Key Set ({"keys": [...]})' });
    return z.NEVER;
  }
  return { keys } as { keys: JsonWebKey[] };
});

/** Validates `source` against `schema`; throws a ConfigError naming every problem. */
export function parseEnv<S extends z.ZodType>(
  schema: S,
  source: Record<string, string | undefined>,
): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) if (v !== undefined && v !== "") cleaned[k] = v;
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? "environment");
    return issue.code === "invalid_type" && cleaned[name] === undefined
      ? `${name} is missing`
      : `${name} ${issue.message.startsWith("must") ? issue.message : "is malformed"}`;
  });
  throw new ConfigError([...new Set(problems)]);
}
