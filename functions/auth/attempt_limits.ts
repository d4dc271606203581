/**
 * auth's attempt limits (shared/http/rate_limit.ts: counted in Postgres, so they hold across
 * instances), each per `LOGIN_WINDOW_SECONDS`:
 * - "login-ip" (`LOGIN_IP_LIMIT` per client IP), counted before the email's, so a blocked IP
 *   cannot burn other people's per-email quota; then "login-email" (`LOGIN_EMAIL_LIMIT` per
 *   normalized email: NFKC, trimmed, lower-cased), counted after the body is validated.
 * - "refresh-ip" (`REFRESH_IP_LIMIT`) and "logout-ip" (`LOGOUT_IP_LIMIT`): each call costs a call
 *   to Supabase Auth, whose own per-IP limits see only this function's address; logout's counts
 *   unauthenticated calls too.
 * The client IP is the rightmost `X-Forwarded-For` entry (the one Supabase's gateway wrote; see
 * client_ip.ts for why not the leftmost), else the connection address, else "unknown".
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Database } from "../../shared/db/db.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 * import { attemptLimits } from "./attempt_limits.ts";
 * import { type AuthVars, validLogin } from "./handlers.ts";
 *
 * declare const db: Database; // the platform's pool
 * const limit = attemptLimits({ db, limits: parseLimits({}), now: Date.now });
 * const app = new Hono<AuthVars>();
 * app.post("/login", limit.loginIp, validLogin, limit.loginEmail, (c) => c.json(c.var.login));
 * ```
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Database } from "../../shared/db/db.ts";
import type { Limits } from "../../shared/limits.ts";
import {
  rateLimit,
  type RateLimitPurge,
  type RateLimitStats,
} from "../../shared/http/rate_limit.ts";
import { clientIp } from "./client_ip.ts";
import type { AuthVars } from "./handlers.ts";

export interface AttemptLimitOptions {
  db: Database;
  limits: Limits;
  now: () => number;
  /** The platform's rate-limit counters (`ctx.rateLimits`). */
  stats?: RateLimitStats;
  /** How idle keys are purged (`rateLimitPurge(ctx)`). */
  purge?: RateLimitPurge;
}

/** auth's four rate-limit guards. */
export interface AttemptLimits {
  loginIp: MiddlewareHandler;
  /** Needs `c.var.login` (validLogin). */
  loginEmail: MiddlewareHandler;
  refreshIp: MiddlewareHandler;
  logoutIp: MiddlewareHandler;
  /** Broker OAuth, after `requireJwt`: starts and callbacks per user, and per client IP. */
  oauthStart: MiddlewareHandler[];
  oauthCallback: MiddlewareHandler[];
}

/** Builds auth's rate-limit guards (see the module's note for the order they go in). */
export function attemptLimits(
  { db, limits: l, now, stats, purge }: AttemptLimitOptions,
): AttemptLimits {
  const window = { windowSeconds: l.LOGIN_WINDOW_SECONDS, db, now, stats, purge };
  const byIp = (c: Context) => clientIp(c, l.LOGIN_TRUSTED_PROXY_HOPS);
  const byEmail = (c: Context<AuthVars>) => c.var.login.email;
  const byUser = (c: Context<AuthVars>) => c.var.userId;
  const oauth = { windowSeconds: l.OAUTH_RATE_WINDOW_SECONDS, db, now, stats };
  return {
    loginIp: rateLimit({ ...window, policy: "login-ip", quota: l.LOGIN_IP_LIMIT, key: byIp }),
    loginEmail: rateLimit({
      ...window,
      policy: "login-email",
      quota: l.LOGIN_EMAIL_LIMIT,
      key: byEmail,
    }),
    refreshIp: rateLimit({ ...window, policy: "refresh-ip", quota: l.REFRESH_IP_LIMIT, key: byIp }),
    logoutIp: rateLimit({ ...window, policy: "logout-ip", quota: l.LOGOUT_IP_LIMIT, key: byIp }),
    oauthStart: [
      rateLimit({ ...oauth, policy: "oauth-start", quota: l.OAUTH_START_USER_LIMIT, key: byUser }),
      rateLimit({ ...oauth, policy: "oauth-start-ip", quota: l.OAUTH_IP_LIMIT, key: byIp }),
    ],
    oauthCallback: [
      rateLimit({
        ...oauth,
        policy: "oauth-callback",
        quota: l.OAUTH_CALLBACK_USER_LIMIT,
        key: byUser,
      }),
      rateLimit({ ...oauth, policy: "oauth-callback-ip", quota: l.OAUTH_IP_LIMIT, key: byIp }),
    ],
  };
}
