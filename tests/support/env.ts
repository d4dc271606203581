/**
 * Test configuration: a complete, valid environment and tokens signed like Supabase Auth's.
 */
import { signToken } from "../../local/sandbox/index.ts";

export const JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256-0123456789";
export const FRONTEND = "http://localhost:5173";

/** Limits that keep tests quick; the contract's fixed names keep their defaults. */
export const FAST_LIMITS = {
  DB_CONNECT_TIMEOUT_MS: "1000",
  DB_QUERY_TIMEOUT_MS: "1000",
  DB_PROBE_MAX_MS: "500",
  BREAKER_RESET_MS: "1000",
};

/** The base variables every function needs, plus `extra`. */
export function testEnv(dbUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SUPABASE_DB_URL: dbUrl,
    SUPABASE_JWT_SECRET: JWT_SECRET,
    FRONTEND_URL: FRONTEND,
    ...FAST_LIMITS,
    ...extra,
  };
}

/** A user's access token (role and audience `authenticated`). */
export function userToken(sub: string = crypto.randomUUID(), extra: Record<string, unknown> = {}) {
  return signToken(JWT_SECRET, { sub, role: "authenticated", aud: "authenticated", ...extra });
}

/** The service-role key. */
export function serviceToken() {
  return signToken(JWT_SECRET, { role: "service_role", iss: "supabase" });
}
