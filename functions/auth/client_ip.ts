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
import ipaddr from "ipaddr.js";

/** The client's bucket: its address (normalized) from `X-Forwarded-For` or the connection. */
export function clientIp(c: Context, trustedHops: number): string {
  const header = c.req.header("x-forwarded-for");
  if (header !== undefined) {
    const entries = header.split(",").map((e) => e.trim()).filter(Boolean);
    const entry = entries[entries.length - trustedHops];
    return (entry && ipBucket(entry)) ?? "unknown";
  }
  const info = c.env as { remoteAddr?: { hostname?: unknown } } | undefined;
  const address = info?.remoteAddr?.hostname;
  return (typeof address === "string" && ipBucket(address)) || "unknown";
}

/**
 * One key per client, however its address is spelled (issue 25): parsed and printed by ipaddr.js,
 * so an IPv4-mapped IPv6 address (`::ffff:203.0.113.7`), leading zeros (`203.000.113.007`), hex
 * or upper-case forms (a leading zero is octal, as inet_aton reads it), a port (`203.0.113.7:443`, `[2001:db8::1]:443`) or a zone (`%eth0`) is
 * the address it names; an IPv6 client is keyed by its /64, the block one subscriber is handed
 * (RFC 6177), since it can rotate through every address in it. Undefined when not an address.
 */
export function ipBucket(text: string): string | undefined {
  let s = text.trim();
  const port = /:(\d{1,5})$/.exec(s)?.[1];
  if (port !== undefined && Number(port) > 65_535) return undefined;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(s);
  if (bracketed) s = bracketed[1];
  else if (/^[^:]+:\d{1,5}$/.test(s)) s = s.slice(0, s.lastIndexOf(":")); // IPv4 with a port
  s = s.replace(/%[^%]*$/, ""); // an IPv6 zone
  if (s.length > 45 || !ipaddr.isValid(s)) return undefined;
  const address = ipaddr.process(s);
  if (address.kind() === "ipv4") return address.toString();
  const hextets = (address as ipaddr.IPv6).toNormalizedString().split(":").slice(0, 4);
  return `${hextets.join(":")}::/64`;
}
