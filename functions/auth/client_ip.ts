/**
 * The client IP that login attempts are counted under.
 *
 * Source: `X-Forwarded-For`, the entry `LOGIN_TRUSTED_PROXY_HOPS` (default 1) from the RIGHT.
 * On hosted Supabase a function is reachable only through the platform's gateway, which sets
 * `X-Forwarded-For`. Whether that gateway overwrites the header or appends to what the client
 * sent is not documented, and the two cases differ only in what sits LEFT of the gateway's own
 * entry: the rightmost entry is the one the nearest trusted proxy wrote (the address that
 * connected to it) in both cases, while the leftmost is whatever the client chose to send when
 * the proxy appends — counting under it would let an attacker pick a fresh bucket per attempt
 * and walk around the per-IP limit (MDN, "X-Forwarded-For: Security and privacy concerns").
 * A deployment with more proxies in front that each append raises the hop count.
 *
 * Without the header (local `npm start`, no proxy) it falls back to the connection's address
 * when the runtime hands it over (`Deno.serve`'s handler info, as in `serveStandalone`), else to
 * one fixed `unknown` bucket: every unattributed attempt then shares one IP quota, which errs on
 * the side of limiting. Note that without a proxy the header is the client's own: local serving
 * is not a place to rely on the per-IP limit.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { clientIp } from "./client_ip.ts";
 *
 * const app = new Hono();
 * // "203.0.113.7" from "X-Forwarded-For: 10.0.0.1, 203.0.113.7" behind one trusted proxy
 * app.post("/login", (c) => c.json({ ip: clientIp(c, 1) }));
 * ```
 */
import type { Context } from "hono";

/** An IPv4 or IPv6 literal (loosely: the characters and length of one). */
const IP = /^[0-9A-Fa-f:.]{2,45}$/;

export function clientIp(c: Context, trustedHops: number): string {
  const header = c.req.header("x-forwarded-for");
  if (header !== undefined) {
    const entries = header.split(",").map((e) => e.trim()).filter(Boolean);
    const entry = entries[entries.length - trustedHops];
    return entry && IP.test(entry) ? entry.toLowerCase() : "unknown";
  }
  const info = c.env as { remoteAddr?: { hostname?: unknown } } | undefined;
  const address = info?.remoteAddr?.hostname;
  return typeof address === "string" && IP.test(address) ? address : "unknown";
}
