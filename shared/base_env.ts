/**
 * The variables every function needs, to be extended by each function's own schema. Only the
 * `SUPABASE_*` variables hosted Supabase sets itself are read (it refuses user secrets with that
 * prefix), plus the optional legacy `JWT_SECRET`.
 *
 * @example
 * ```ts
 * import { BaseEnv } from "./base_env.ts";
 * import { httpUrl } from "./env.ts";
 *
 * const Env = BaseEnv.extend({ DISCORD_WEBHOOK_URL: httpUrl });
 * ```
 */
import * as z from "./zod.ts";
import { httpUrl, jsonKeyMap, jwks, origins, postgresUrl, secret } from "./env.ts";

/** Every function: the database and the project's keys (see shared/auth/jwt.ts). */
export const BaseEnv = z.object({
  SUPABASE_DB_URL: postgresUrl,
  SUPABASE_URL: httpUrl.optional(),
  SUPABASE_JWKS: jwks.optional(),
  SUPABASE_SERVICE_ROLE_KEY: secret(20).optional(),
  SUPABASE_SECRET_KEYS: jsonKeyMap.optional(),
  JWT_SECRET: secret(32).optional(),
  SUPABASE_JWT_SECRET: secret(32).optional(),
});

export type BaseConfig = z.infer<typeof BaseEnv>;

/** Browser-facing functions add the allowed origins. */
export const BrowserEnv = BaseEnv.extend({ FRONTEND_URL: origins });
