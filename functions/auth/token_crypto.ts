/**
 * Encryption of broker tokens at rest: AES-256-GCM (WebCrypto) under `BROKER_TOKEN_KEY`, a fresh
 * random 12-byte IV per token (NIST SP 800-38D §8.2.2), and additional data naming the row the
 * token belongs to, so a ciphertext copied to another user's row does not decrypt.
 *
 * Stored layout: `[1-byte key version][12-byte IV][ciphertext ‖ 16-byte tag]`; the version lets
 * the key be rotated later without guessing which key sealed a row.
 *
 * @example
 * ```ts
 * import { decryptToken, encryptToken, importTokenKey, tokenContext } from "./token_crypto.ts";
 *
 * const tokenKey = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
 * const userId = crypto.randomUUID();
 * const key = await importTokenKey(tokenKey); // BROKER_TOKEN_KEY
 * const sealed = await encryptToken(key, "access-token", tokenContext(userId, "alpaca", "access"));
 * await decryptToken(key, sealed, tokenContext(userId, "alpaca", "access")); // "access-token"
 * ```
 */
import * as z from "../../shared/zod.ts";

const KEY_VERSION = 1;
const IV_BYTES = 12;

/** `BROKER_TOKEN_KEY`: standard base64 of exactly 32 random bytes. */
export const tokenKeyBase64 = z.string().refine((v) => {
  try {
    return /^[A-Za-z0-9+/]+={0,2}$/.test(v) && decodeBase64(v).length === 32;
  } catch {
    return false;
  }
}, "must be the base64 of 32 bytes");

/** The raw key bytes from base64; throws on malformed input. */
export function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** Imports the AES-GCM key (non-extractable). Throws when it is not 32 bytes. */
export function importTokenKey(b64: string): Promise<CryptoKey> {
  const raw = decodeBase64(b64);
  if (raw.length !== 32) throw new Error(`BROKER_TOKEN_KEY must be 32 bytes, got ${raw.length}`);
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** The additional authenticated data binding a token to its row and kind. */
export function tokenContext(userId: string, broker: string, kind: "access" | "refresh") {
  return `broker-token|v${KEY_VERSION}|${userId}|${broker}|${kind}`;
}

/** Seals `plaintext`; a new random IV each call. */
export async function encryptToken(
  key: CryptoKey,
  plaintext: string,
  context: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(context) },
      key,
      new TextEncoder().encode(plaintext),
    ),
  );
  const out = new Uint8Array(1 + IV_BYTES + sealed.length);
  out[0] = KEY_VERSION;
  out.set(iv, 1);
  out.set(sealed, 1 + IV_BYTES);
  return out;
}

/** Opens a sealed token; throws if the key, the context or a single byte is wrong. */
export async function decryptToken(
  key: CryptoKey,
  stored: Uint8Array<ArrayBuffer>,
  context: string,
): Promise<string> {
  if (stored[0] !== KEY_VERSION || stored.length < 1 + IV_BYTES + 16) {
    throw new Error(`Unknown sealed token format (version ${stored[0]})`);
  }
  const plain = await crypto.subtle.decrypt(
    {
      name: "AES-GCM",
      iv: stored.subarray(1, 1 + IV_BYTES),
      additionalData: new TextEncoder().encode(context),
    },
    key,
    stored.subarray(1 + IV_BYTES),
  );
  return new TextDecoder().decode(plain);
}
