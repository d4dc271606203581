/**
 * The project's token verifier from a function's configuration: the key sources hosted Supabase
 * provides (`SUPABASE_JWKS`, the JWKS endpoint under `SUPABASE_URL`, the service-role key and
 * `SUPABASE_SECRET_KEYS`) and the optional legacy HS256 secret. A configuration that names no
 * key source at all cannot verify anyone: a ConfigError, so the function answers `BOOT_ERROR`.
 *
 * @example
 * ```ts
 * import { projectTokenVerifier } from "./project_keys.ts";
 *
 * const tokens = projectTokenVerifier({ SUPABASE_URL: "https://abc.supabase.co" }, {});
 * ```
 */
import { ConfigError } from "../env.ts";
import { TokenVerifier, type TokenVerifierOptions } from "./jwt.ts";

/** The key sources of the base environment (shared/base_env.ts). */
export interface ProjectKeys {
  SUPABASE_URL?: string;
  SUPABASE_JWKS?: { keys: JsonWebKey[] };
  SUPABASE_SERVICE_ROLE_KEY?: string;
  SUPABASE_SECRET_KEYS?: string[];
  JWT_SECRET?: string;
  SUPABASE_JWT_SECRET?: string;
}

/** How the verifier caches and fetches (TokenVerifier's own options). */
export type VerifierTuning = Pick<
  TokenVerifierOptions,
  "cooldownMs" | "cacheMax" | "cacheMaxAgeMs" | "timeoutMs" | "fetch"
>;

/** The verifier for `keys`; throws ConfigError when they name no key source. */
export function projectTokenVerifier(keys: ProjectKeys, tuning: VerifierTuning): TokenVerifier {
  const hmacSecret = keys.JWT_SECRET ?? keys.SUPABASE_JWT_SECRET;
  if (!keys.SUPABASE_JWKS && !keys.SUPABASE_URL && !hmacSecret) {
    throw new ConfigError([
      "SUPABASE_JWKS or SUPABASE_URL is missing (the project's signing keys)",
    ]);
  }
  return new TokenVerifier({
    jwks: keys.SUPABASE_JWKS as TokenVerifierOptions["jwks"],
    supabaseUrl: keys.SUPABASE_URL,
    hmacSecret,
    serviceKeys: [keys.SUPABASE_SERVICE_ROLE_KEY ?? "", ...(keys.SUPABASE_SECRET_KEYS ?? [])],
    ...tuning,
  });
}
