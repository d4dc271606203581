/**
 * Callers' credentials as hosted Supabase issues them, verified locally with `jose`:
 * - user tokens signed with the project's asymmetric keys (ES256, RS256) against `SUPABASE_JWKS`,
 *   or the JWKS at `$SUPABASE_URL/auth/v1/.well-known/jwks.json` (cached; an unknown `kid`
 *   refetches at most every `JWKS_COOLDOWN_MS`; an unreachable endpoint fails only the tokens
 *   that need it, with `503`, never the boot);
 * - legacy HS256 tokens only when `JWT_SECRET` (or `SUPABASE_JWT_SECRET`, kept for local use) is
 *   set; `alg` is pinned by the key that verifies it (`none` never verifies), `exp` is required,
 *   role and (for users) the `authenticated` audience are checked;
 * - service callers: a service-role JWT, the exact `SUPABASE_SERVICE_ROLE_KEY`, or one of
 *   `SUPABASE_SECRET_KEYS` (`sb_secret_…`), in `Authorization: Bearer` or `apikey`, compared in
 *   constant time.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { type JwtVariables, requireJwt, TokenVerifier } from "./jwt.ts";
 *
 * type E = { Variables: JwtVariables };
 * const tokens = new TokenVerifier({ jwks: { keys: [] }, serviceKeys: ["sb_secret_x"] });
 * const app = new Hono<E>();
 * const user = requireJwt<E>({ tokens, role: "authenticated" });
 * app.get("/me", user, (c) => c.json({ id: c.var.claims.sub }));
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  errors as joseErrors,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { Forbidden, ServiceUnavailable, Unauthorized } from "../errors.ts";

export interface Claims extends JWTPayload {
  sub?: string;
  role?: string;
  email?: string;
  [key: string]: unknown;
}

export type Role = "authenticated" | "service_role";

/** What {@linkcode requireJwt} sets: the caller's claims, and a user's id. */
export interface JwtVariables {
  claims: Claims;
  userId: string;
}

export interface TokenVerifierOptions {
  /** The project's JSON Web Key Set (`SUPABASE_JWKS`). */
  jwks?: JSONWebKeySet;
  /** The project URL; its JWKS endpoint is used when `jwks` lacks the token's key. */
  supabaseUrl?: string;
  /** The legacy HS256 secret; without it HS256 tokens are refused. */
  hmacSecret?: string;
  /** Opaque keys that identify a service caller (service-role key, `sb_secret_…` keys). */
  serviceKeys?: string[];
  /** How long an unknown `kid` waits before the JWKS endpoint is asked again. Default 30 s. */
  cooldownMs?: number;
  /**
   * Verified tokens kept: a user's repeated requests skip the signature check (an ES256 verify
   * is a large part of a small request's CPU). At most this many (default 2,048)…
   */
  cacheMax?: number;
  /** …each for at most this long after its check, and never past its `exp` (default 5 minutes). */
  cacheMaxAgeMs?: number;
  /** Deadline of one JWKS fetch. Default 5 s. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ASYMMETRIC = ["ES256", "RS256"];
/** jose's errors that say the token is bad (anything else is the key source failing). */
const TOKEN_ERRORS = [
  joseErrors.JWTClaimValidationFailed,
  joseErrors.JWTExpired,
  joseErrors.JWTInvalid,
  joseErrors.JWSInvalid,
  joseErrors.JWSSignatureVerificationFailed,
  joseErrors.JOSEAlgNotAllowed,
  joseErrors.JOSENotSupported,
  joseErrors.JWKSNoMatchingKey,
  joseErrors.JWKSMultipleMatchingKeys,
];

/** Verifies the project's tokens and service keys; one per function instance (it caches keys). */
export class TokenVerifier {
  readonly #local?: ReturnType<typeof createLocalJWKSet>;
  readonly #remote?: ReturnType<typeof createRemoteJWKSet>;
  readonly #hmac?: Uint8Array;
  readonly #serviceKeys: Uint8Array[];
  /** Tokens whose signature and expiry were verified, in insertion order (see `#recall`). */
  readonly #verified = new Map<string, { claims: Claims; until: number }>();
  readonly #cacheMax: number;
  readonly #cacheMaxAgeMs: number;
  /** `$SUPABASE_URL/auth/v1`: the `iss` of the project's user tokens (checked on the JWKS path). */
  readonly #issuer?: string;

  constructor(opts: TokenVerifierOptions) {
    this.#cacheMax = opts.cacheMax ?? 2_048;
    this.#cacheMaxAgeMs = opts.cacheMaxAgeMs ?? 5 * 60_000;
    if (opts.jwks) this.#local = createLocalJWKSet(opts.jwks);
    if (opts.supabaseUrl) {
      this.#issuer = `${opts.supabaseUrl.replace(/\/*$/, "")}/auth/v1`;
      const url = new URL("auth/v1/.well-known/jwks.json", opts.supabaseUrl.replace(/\/*$/, "/"));
      this.#remote = createRemoteJWKSet(url, {
        cooldownDuration: opts.cooldownMs ?? 30_000,
        timeoutDuration: opts.timeoutMs ?? 5_000,
        ...(opts.fetch ? { [customFetch]: opts.fetch } : {}),
      });
    }
    if (opts.hmacSecret) this.#hmac = encoder.encode(opts.hmacSecret);
    this.#serviceKeys = (opts.serviceKeys ?? []).filter(Boolean).map((k) => encoder.encode(k));
    if (!this.#local && !this.#remote && !this.#hmac) {
      throw new Error("TokenVerifier needs a JWKS, a Supabase URL or an HS256 secret");
    }
  }

  /** Whether `credential` is exactly one of the service keys (constant time per key). */
  isServiceKey(credential: string): boolean {
    const given = encoder.encode(credential);
    let found = false;
    for (const key of this.#serviceKeys) found = timingSafeEqual(given, key) || found;
    return found;
  }

  /**
   * The token's claims once its signature, expiry, role and audience hold. Throws Unauthorized
   * (bad token), Forbidden (valid token of another role) or ServiceUnavailable (keys unreachable).
   */
  async verify(token: string, role: Role): Promise<Claims> {
    let claims = this.#recall(token);
    if (!claims) {
      claims = await this.#verifySignature(token);
      this.#remember(token, claims);
    }
    if (claims.role !== role) {
      throw new Forbidden(`This route needs the ${role} role.`, "ROLE_NOT_ALLOWED");
    }
    if (role === "authenticated") {
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

  /** jose's verification: signature (the key pins `alg`), `exp` required and not passed. */
  async #verifySignature(token: string): Promise<Claims> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new Unauthorized("The token is malformed.", "INVALID_TOKEN");
    }
    if (alg === "HS256" && !this.#hmac) {
      throw new Unauthorized("HS256 tokens are not accepted.", "INVALID_TOKEN");
    }
    let payload: Claims;
    try {
      ({ payload } = alg === "HS256"
        ? await jwtVerify(token, this.#hmac!, OPTIONS.HS256)
        : await jwtVerify(token, this.#key, OPTIONS.ASYMMETRIC));
    } catch (err) {
      if (TOKEN_ERRORS.some((E) => err instanceof E)) {
        throw new Unauthorized("The token is invalid or expired.", "INVALID_TOKEN");
      }
      throw new ServiceUnavailable(
        "AUTH_KEYS_UNAVAILABLE",
        "The project's signing keys could not be fetched; try again shortly.",
        5_000,
        err,
      );
    }
    // A user token verified against the JWKS names this project's Auth as its issuer (issue
    // 25): a key shared with another project or Auth server does not make its users ours.
    // (Service-role JWTs say `iss: "supabase"`; HS256 tokens are the legacy secret's.)
    if (
      alg !== "HS256" && this.#issuer && payload.role === "authenticated" &&
      payload.iss !== this.#issuer
    ) {
      throw new Unauthorized("The token was issued by another Auth server.", "INVALID_TOKEN");
    }
    return payload;
  }

  /**
   * Claims of a token this verifier already verified (looked up by its exact text), while its
   * `exp` has not passed (jose's own test: valid while the current time is before `exp`) and
   * for at most `cacheMaxAgeMs` after the check, so a key withdrawn from the JWKS stops
   * being honoured within minutes, as with jose's own ten-minute cache of the remote JWKS.
   * Refused tokens are never remembered: each one is checked again.
   */
  #recall(token: string): Claims | undefined {
    const hit = this.#verified.get(token);
    if (!hit) return undefined;
    if (Date.now() < hit.until) return hit.claims;
    this.#verified.delete(token);
    return undefined;
  }

  /** Remembers a verified token (the oldest entry goes when `cacheMax` are held). */
  #remember(token: string, claims: Claims) {
    const now = Date.now();
    const until = Math.min((claims.exp as number) * 1000, now + this.#cacheMaxAgeMs);
    if (!(until > now)) return;
    if (this.#verified.size >= this.#cacheMax) {
      this.#verified.delete(this.#verified.keys().next().value!);
    }
    this.#verified.set(token, { claims: Object.freeze(claims), until });
  }

  /** The project's key for an asymmetric token: the configured set, then the endpoint. */
  #key = async (
    header: Parameters<ReturnType<typeof createLocalJWKSet>>[0],
    token: Parameters<ReturnType<typeof createLocalJWKSet>>[1],
  ) => {
    if (this.#local) {
      try {
        return await this.#local(header, token);
      } catch (err) {
        if (!(err instanceof joseErrors.JWKSNoMatchingKey) || !this.#remote) throw err;
      }
    }
    if (!this.#remote) throw new joseErrors.JWKSNoMatchingKey();
    return await this.#remote(header, token);
  };
}

const OPTIONS = {
  HS256: { algorithms: ["HS256"], requiredClaims: ["exp"] },
  ASYMMETRIC: { algorithms: ASYMMETRIC, requiredClaims: ["exp"] },
};

const encoder = new TextEncoder();

/** Compares without an early exit on the first differing byte (length is not secret). */
function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** The credential after `Bearer ` (scheme case-insensitive, RFC 7235 §2.1), if any. */
export function bearer(header: string | undefined): string | undefined {
  return /^bearer +(\S+)$/i.exec(header ?? "")?.[1];
}

/** A service caller's claims, or null when the request carries no valid service credential. */
export async function serviceCaller(
  tokens: TokenVerifier,
  headers: { authorization?: string; apikey?: string },
): Promise<Claims | null> {
  for (const credential of [bearer(headers.authorization), headers.apikey]) {
    if (!credential) continue;
    if (tokens.isServiceKey(credential)) return { role: "service_role" };
    if (credential.split(".").length !== 3) continue;
    const claims = await tokens.verify(credential, "service_role").catch(() => null);
    if (claims) return claims;
  }
  return null;
}

export interface JwtOptions {
  tokens: TokenVerifier;
  /** The role the caller must have. */
  role: Role;
}

/**
 * Puts the verified caller's claims in `c.var.claims`, and a user's id in `c.var.userId`. Users: `Authorization: Bearer <JWT>`.
 * Service callers: a service-role JWT or a service key, in `Authorization` or `apikey`.
 */
export function requireJwt<E extends { Variables: JwtVariables }>(
  opts: JwtOptions,
): MiddlewareHandler<E> {
  const { tokens, role } = opts;
  return async function jwtGuard(c, next) {
    const authorization = c.req.header("authorization");
    const token = bearer(authorization);
    if (role === "service_role") {
      const claims = await serviceCaller(tokens, { authorization, apikey: c.req.header("apikey") });
      if (claims) {
        c.set("claims", claims);
        return await next();
      }
    }
    if (!token) throw new Unauthorized("Send Authorization: Bearer <token>.", "MISSING_TOKEN");
    if (tokens.isServiceKey(token)) {
      throw new Forbidden(`This route needs the ${role} role.`, "ROLE_NOT_ALLOWED");
    }
    const claims = await tokens.verify(token, role);
    c.set("claims", claims);
    // verify() checked that a user's `sub` is a uuid.
    // A uuid in any letter case is one user (issue 25): the owner key is its lower-case form.
    if (role === "authenticated") c.set("userId", (claims.sub as string).toLowerCase());
    await next();
  };
}

/** The verified user's id (`c.var.userId`), as a key for rate limits and idempotency. */
export function userId<E extends { Variables: { userId: string } }>(c: Context<E>): string {
  // c.get, not c.var: Hono builds a new object of every variable on each c.var.
  return c.get("userId");
}
