/**
 * The OAuth `state` of broker connections (RFC 6749 §10.12, CSRF): a random nonce stored with the
 * user it was issued to (internal.oauth_states), its expiry, and an HMAC-SHA256 over
 * (nonce, user, expiry) with a key derived from `BROKER_TOKEN_KEY` (HKDF, its own label, so the
 * encryption key itself never signs anything).
 *
 * The user id is not in the state (it travels through the broker); it is looked up by nonce and
 * the signature is checked against it, so a state is worth nothing without its row, and a row is
 * worth nothing without the signature. Single use is the row's `consumed_at`, set in the same
 * transaction that stores the connection.
 *
 * @example
 * ```ts
 * import { OAuthStateSigner } from "./oauth_state.ts";
 *
 * const tokenKey = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
 * const userId = crypto.randomUUID();
 * const signer = await OAuthStateSigner.create(tokenKey); // BROKER_TOKEN_KEY
 * const { state, nonce, expiresAt } = await signer.issue(userId, Date.now(), 600);
 * const parsed = signer.parse(state); // { nonce, expiresAt, signature } | null
 * if (parsed) await signer.verify(parsed, userId); // true
 * ```
 */
import { decodeBase64 } from "./token_crypto.ts";

export interface ParsedState {
  nonce: string;
  /** Unix seconds. */
  expiresAt: number;
  signature: string;
}

const STATE = /^([A-Za-z0-9_-]{22})\.(\d{10})\.([A-Za-z0-9_-]{43})$/;

export class OAuthStateSigner {
  readonly #key: CryptoKey;

  private constructor(key: CryptoKey) {
    this.#key = key;
  }

  /** Derives the HMAC key from the base64 32-byte `BROKER_TOKEN_KEY`. */
  static async create(tokenKeyB64: string): Promise<OAuthStateSigner> {
    const ikm = await crypto.subtle.importKey("raw", decodeBase64(tokenKeyB64), "HKDF", false, [
      "deriveKey",
    ]);
    const key = await crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new Uint8Array(0),
        info: new TextEncoder().encode("oauth-state hmac v1"),
      },
      ikm,
      { name: "HMAC", hash: "SHA-256", length: 256 },
      false,
      ["sign", "verify"],
    );
    return new OAuthStateSigner(key);
  }

  /** A new state for `userId`, valid for `ttlSeconds` from `nowMs`. */
  async issue(userId: string, nowMs: number, ttlSeconds: number) {
    const nonce = b64url(crypto.getRandomValues(new Uint8Array(16)));
    const expiresAt = Math.floor(nowMs / 1000) + ttlSeconds;
    const signature = b64url(
      new Uint8Array(
        await crypto.subtle.sign("HMAC", this.#key, message(nonce, userId, expiresAt)),
      ),
    );
    return { state: `${nonce}.${expiresAt}.${signature}`, nonce, expiresAt };
  }

  /** Splits a state, or null when it is not one of ours in form. */
  parse(state: string): ParsedState | null {
    const m = STATE.exec(state);
    return m ? { nonce: m[1], expiresAt: Number(m[2]), signature: m[3] } : null;
  }

  /** Whether the signature covers (nonce, `userId`, expiry); constant-time (WebCrypto verify). */
  async verify(parsed: ParsedState, userId: string): Promise<boolean> {
    let sig: Uint8Array<ArrayBuffer>;
    try {
      sig = fromB64url(parsed.signature);
    } catch {
      return false;
    }
    return await crypto.subtle.verify(
      "HMAC",
      this.#key,
      sig,
      message(parsed.nonce, userId, parsed.expiresAt),
    );
  }
}

function message(nonce: string, userId: string, expiresAt: number): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`oauth-state|v1|${nonce}|${userId.toLowerCase()}|${expiresAt}`);
}

/** Unpadded base64url (RFC 4648 §5). */
export function b64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/**
 * Decodes unpadded base64url canonically: throws unless `s` is exactly what `b64url` writes for
 * the bytes it decodes to. A lenient decoder (atob) ignores the unused low bits of the last
 * character (RFC 4648 §3.5), so several strings decode to the same bytes and a state whose
 * last character was changed could still verify. `Uint8Array.fromBase64` with
 * `lastChunkHandling: "strict"` would say the same, but the Edge Runtime's V8 may predate it;
 * encoding back and comparing works everywhere.
 */
export function fromB64url(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replaceAll("-", "+").replaceAll("_", "/");
  const bytes = Uint8Array.from(
    atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)),
    (c) => c.charCodeAt(0),
  );
  if (b64url(bytes) !== s) throw new SyntaxError("Not canonical base64url");
  return bytes;
}
