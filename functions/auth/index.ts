/**
 * auth: login, refresh and logout through Supabase Auth (handlers.ts), with brute-force limits
 * that hold across instances (attempt_limits.ts), and connecting a broker account with OAuth
 * (oauth_routes.ts: signed single-use state bound to the user who started the flow, tokens
 * stored encrypted). Browser-facing (strict CORS). Broker OAuth is optional (config.ts): without
 * its variables `/oauth/*` answers `501 OAUTH_NOT_CONFIGURED` and everything else serves.
 */
import { rateLimitPurge } from "../../shared/platform/platform.ts";
import { defineFunction } from "../../shared/platform/app.ts";
import { bodyLimit } from "../../shared/http/body_limit.ts";
import { contentType } from "../../shared/http/content_type.ts";
import { requireJwt } from "../../shared/auth/jwt.ts";
import { route } from "../../shared/http/route.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { attemptLimits } from "./attempt_limits.ts";
import { Env } from "./config.ts";
import { type AuthVars, login, logout, refresh, validLogin, validRefresh } from "./handlers.ts";
import {
  brokerOAuth,
  noHead,
  notConfigured,
  oauthCallback,
  oauthStart,
  validCallback,
} from "./oauth_routes.ts";
import { SupabaseAuth } from "./supabase_auth.ts";

const authFunction = defineFunction<typeof Env, AuthVars>({
  name: "auth",
  env: Env,
  browser: true,
  async build(app, { db, limits: l, config, ...ctx }) {
    const auth = new SupabaseAuth({
      url: config.SUPABASE_URL,
      anonKey: config.SUPABASE_ANON_KEY,
      timeoutMs: l.AUTH_TIMEOUT_MS,
      breaker: ctx.breakers.get("supabase-auth"),
      fetch: ctx.fetch,
    });
    const oauth = await brokerOAuth({ db, limits: l, config, ...ctx });
    const user = requireJwt<AuthVars>({ tokens: ctx.tokens, role: "authenticated" });
    const limit = attemptLimits({
      db,
      limits: l,
      now: ctx.now,
      stats: ctx.rateLimits,
      purge: rateLimitPurge({ limits: l, ...ctx }),
    });
    const json = [contentType("application/json"), bodyLimit(l.BODY_LIMIT_BYTES)];

    route(app, "/login", {
      POST: [limit.loginIp, ...json, validLogin, limit.loginEmail, login(auth)],
    });
    route(app, "/refresh", { POST: [limit.refreshIp, ...json, validRefresh, refresh(auth)] });
    // The one exception to the guard order: logout's IP limit counts unauthenticated calls too.
    route(app, "/logout", { POST: [limit.logoutIp, user, logout(auth)] });

    if (!oauth) {
      ctx.log.info("broker OAuth is not configured; /oauth/* answers 501");
      route(app, "/oauth/start", { GET: [notConfigured] });
      route(app, "/oauth/callback", { POST: [notConfigured] });
      return;
    }
    route(app, "/oauth/start", { GET: [noHead, user, ...limit.oauthStart, oauthStart(oauth)] });
    route(app, "/oauth/callback", {
      POST: [user, ...limit.oauthCallback, ...json, validCallback, oauthCallback(oauth, ctx.log)],
    });
  },
});

export default authFunction;

if (import.meta.main) await serveStandalone(authFunction);
