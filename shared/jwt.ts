/**
 * JWT verification without a network call: HS256 with `SUPABASE_JWT_SECRET` (Hono's verifier,
 * which refuses any other `alg`, `none` included, and checks `exp`/`nbf`), then the role and, for
 * users, the `authenticated` audience Supabase Auth puts in its access tokens.
 *
 * @example
 * app.use(requireJwt({ secret, role: "authenticated" }));
 * const userId = c.get("user").sub;
 */
import type { MiddlewareHandler } from "hono";
import { verify } from "hono/jwt";
import { Forbidden, Unauthorized } from "./errors.ts";

export interface Claims {
  sub?: string;
  role?: string;
  aud?: string | string[];
  exp?: number;
  email?: string;
  [key: string]: unknown;
}

export type Role = "authenticated" | "service_role";

export interface JwtOptions {
  secret: string;
  /** The role the token must carry. */
  role: Role;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The HMAC key per secret, imported once rather than on every request. */
const keys = new Map<string, Promise<CryptoKey>>();
function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["verify"],
    );
    keys.set(secret, key);
  }
  return key;
}

/** Verifies a bearer token; throws Unauthorized (bad token) or Forbidden (wrong role). */
export async function verifyJwt(token: string, opts: JwtOptions): Promise<Claims> {
  let claims: Claims;
  try {
    claims = await verify(token, await hmacKey(opts.secret), "HS256") as Claims;
  } catch {
    throw new Unauthorized("The token is invalid or expired.", "INVALID_TOKEN");
  }
  if (typeof claims.exp !== "number") {
    throw new Unauthorized("The token has no expiry.", "INVALID_TOKEN");
  }
  if (claims.role !== opts.role) {
    throw new Forbidden(`This route needs the ${opts.role} role.`, "ROLE_NOT_ALLOWED");
  }
  if (opts.role === "authenticated") {
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes("authenticated")) {
      throw new Unauthorized("The token's audience is wrong.", "INVALID_TOKEN");
    }
    if (typeof claims.sub !== "string" || !UUID.test(claims.sub)) {
      throw new Unauthorized("The token names no user.", "INVALID_TOKEN");
    }
  }
  return claims;
}

/** Reads `Authorization: Bearer …` and puts the verified claims in `c.var.claims`. */
export function requireJwt<E extends { Variables: { claims: Claims } }>(
  opts: JwtOptions,
): MiddlewareHandler<E> {
  if (opts.secret.length < 32) throw new Error("JWT secret must be at least 32 characters");
  const options = { ...opts };
  return async function jwtGuard(c, next) {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer ([\w-]+\.[\w-]+\.[\w-]*)$/.exec(header);
    if (!match) throw new Unauthorized("Send Authorization: Bearer <token>.", "MISSING_TOKEN");
    c.set("claims", await verifyJwt(match[1], options));
    await next();
  };
}
