/**
 * SHA-256 of a string, for request fingerprints and client order ids.
 *
 * node:crypto's hash is synchronous: about 5 µs against about 37 µs (and a trip through the
 * thread pool, 12 % of an order's profile) for `crypto.subtle.digest`. It is imported on first
 * use, not at boot: any `node:` import brings up Node's compatibility layer, the largest part of
 * a cold isolate's start, and by a request that hashes, the database driver has loaded it anyway.
 *
 * @example
 * ```ts
 * import { sha256 } from "./sha256.ts";
 *
 * await sha256("abc", "hex"); // "ba7816bf…"
 * ```
 *
 * @module
 */
type NodeCrypto = typeof import("node:crypto");

let loaded: NodeCrypto | undefined;
let loading: Promise<NodeCrypto> | undefined;

/** node:crypto, imported on the first call (see the module's summary). */
export async function nodeCrypto(): Promise<NodeCrypto> {
  return loaded ??= await (loading ??= import("node:crypto"));
}

/** The digest of `text` (UTF-8) in `encoding`. */
export async function sha256(text: string, encoding: "hex" | "base64url"): Promise<string> {
  return (loaded ?? await nodeCrypto()).createHash("sha256").update(text).digest(encoding);
}
