/**
 * The sandbox project's signing key: ES256 with a `kid`, as hosted Supabase signs user tokens
 * today, published as a JWKS. Kept in the sandbox's data folder so printed keys survive restarts.
 *
 * @example
 * ```ts
 * import { loadSigningKey } from "./signing_key.ts";
 *
 * const key = await loadSigningKey(".data");
 * const token = await key.sign({
 *   sub: crypto.randomUUID(),
 *   role: "authenticated",
 *   aud: "authenticated",
 * });
 * ```
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from "jose";

export interface SigningKey {
  kid: string;
  /** The public JWKS (`SUPABASE_JWKS`, and what `/auth/v1/.well-known/jwks.json` serves). */
  jwks: { keys: JWK[] };
  /** Signs `claims` (adds `iat`, and `exp` after `ttlSeconds`). */
  sign(claims: Record<string, unknown>, ttlSeconds?: number): Promise<string>;
  /** Verifies a token this key signed; null when it did not. */
  verify(token: string): Promise<Record<string, unknown> | null>;
}

/** A new key, or the one kept in `<dir>/sandbox-signing-key.json`. */
export async function loadSigningKey(dir?: string): Promise<SigningKey> {
  const file = dir ? `${dir}/sandbox-signing-key.json` : undefined;
  let stored: { kid: string; privateJwk: JWK } | undefined;
  if (file) {
    try {
      stored = JSON.parse(await Deno.readTextFile(file));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  if (!stored) {
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    stored = {
      kid: `sandbox-${crypto.randomUUID().slice(0, 8)}`,
      privateJwk: await exportJWK(privateKey),
    };
    if (file) {
      await Deno.mkdir(dir!, { recursive: true });
      await Deno.writeTextFile(file, JSON.stringify(stored), { mode: 0o600 });
    }
  }
  const { kid, privateJwk } = stored;
  const privateKey = await importJWK(privateJwk, "ES256");
  const { d: _d, ...publicJwk } = privateJwk;
  const publicKey = await importJWK(publicJwk, "ES256");
  return {
    kid,
    jwks: { keys: [{ ...publicJwk, kid, alg: "ES256", use: "sig" }] },
    sign(claims, ttlSeconds = 3600) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iat: now, exp: now + ttlSeconds, ...claims })
        .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(privateKey);
    },
    async verify(token) {
      try {
        return (await jwtVerify(token, publicKey, { algorithms: ["ES256"] })).payload;
      } catch {
        return null;
      }
    },
  };
}
