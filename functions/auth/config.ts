/**
 * auth's environment: the variables it needs, and the broker OAuth group, which is all or none
 * (contract, Environment): some of it refuses the boot naming the missing ones; none of it serves
 * everything but `/oauth/*`.
 *
 * @example
 * ```ts
 * import { Env, oauthConfig } from "./config.ts";
 *
 * const config = Env.parse({
 *   SUPABASE_DB_URL: "postgres://postgres@127.0.0.1:5432/postgres",
 *   FRONTEND_URL: "https://app.example.com",
 *   SUPABASE_URL: "https://project.supabase.co",
 *   SUPABASE_ANON_KEY: "the-project-anon-key",
 * });
 * oauthConfig(config); // undefined: the broker OAuth group is not set
 * ```
 */
import * as z from "../../shared/zod.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import type { BrokerOAuthConfig } from "./broker_oauth.ts";
import { tokenKeyBase64 } from "./token_crypto.ts";

/** A URL compared byte for byte by the broker (`redirect_uri`): validated, never rewritten. */
const exactHttpUrl = z.string().url("must be an http(s) URL").refine(
  (v) => /^https?:\/\//.test(v),
  "must be an http(s) URL",
);

/** The broker OAuth group: all or none (contract, Environment). */
export const OAUTH_VARIABLES = [
  "BROKER_OAUTH_CLIENT_ID",
  "BROKER_OAUTH_CLIENT_SECRET",
  "BROKER_OAUTH_AUTHORIZE_URL",
  "BROKER_OAUTH_TOKEN_URL",
  "BROKER_OAUTH_REDIRECT_URL",
  "BROKER_TOKEN_KEY",
] as const satisfies readonly (keyof BrokerOAuthConfig)[];

/** auth's variables: Supabase Auth's URL and anon key, and the optional broker OAuth group. */
export const Env = BrowserEnv.extend({
  SUPABASE_URL: httpUrl,
  SUPABASE_ANON_KEY: secret(20),
  BROKER_OAUTH_CLIENT_ID: secret(1).optional(),
  BROKER_OAUTH_CLIENT_SECRET: secret(8).optional(),
  BROKER_OAUTH_AUTHORIZE_URL: httpUrl.optional(),
  BROKER_OAUTH_TOKEN_URL: httpUrl.optional(),
  BROKER_OAUTH_REDIRECT_URL: exactHttpUrl.optional(),
  BROKER_TOKEN_KEY: tokenKeyBase64.optional(),
}).superRefine((env, ctx) => {
  const missing = OAUTH_VARIABLES.filter((name) => env[name] === undefined);
  if (missing.length === 0 || missing.length === OAUTH_VARIABLES.length) return;
  for (const name of missing) {
    ctx.addIssue({
      code: "custom",
      path: [name],
      message: "must be set: broker OAuth needs all of its variables, or none",
    });
  }
  // Checked even when other variables are invalid, so the boot error names every problem.
}, { when: () => true });

/** auth's validated configuration. */
export type AuthConfig = z.infer<typeof Env>;

/** The broker OAuth configuration when the group is set (the schema has refused a partial one). */
export function oauthConfig(cfg: AuthConfig): BrokerOAuthConfig | undefined {
  const {
    BROKER_OAUTH_CLIENT_ID,
    BROKER_OAUTH_CLIENT_SECRET,
    BROKER_OAUTH_AUTHORIZE_URL,
    BROKER_OAUTH_TOKEN_URL,
    BROKER_OAUTH_REDIRECT_URL,
    BROKER_TOKEN_KEY,
  } = cfg;
  if (
    !BROKER_OAUTH_CLIENT_ID || !BROKER_OAUTH_CLIENT_SECRET || !BROKER_OAUTH_AUTHORIZE_URL ||
    !BROKER_OAUTH_TOKEN_URL || !BROKER_OAUTH_REDIRECT_URL || !BROKER_TOKEN_KEY
  ) return undefined;
  return {
    BROKER_OAUTH_CLIENT_ID,
    BROKER_OAUTH_CLIENT_SECRET,
    BROKER_OAUTH_AUTHORIZE_URL,
    BROKER_OAUTH_TOKEN_URL,
    BROKER_OAUTH_REDIRECT_URL,
    BROKER_TOKEN_KEY,
  };
}
