/**
 * The variables every function needs, to be extended by each function's own schema.
 *
 * @example
 * const Env = BaseEnv.extend({ DISCORD_WEBHOOK_URL: httpUrl });
 */
import { z } from "zod";
import { origins, postgresUrl, secret } from "./env.ts";

/** Every function: the JWT secret and the database. */
export const BaseEnv = z.object({
  SUPABASE_JWT_SECRET: secret(32),
  SUPABASE_DB_URL: postgresUrl,
});

/** Browser-facing functions add the allowed origins. */
export const BrowserEnv = BaseEnv.extend({ FRONTEND_URL: origins });
