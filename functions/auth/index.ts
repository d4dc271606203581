/**
 * auth: login, refresh and logout through Supabase Auth, with brute-force limits that hold across
 * instances, and connecting a broker account with OAuth (signed single-use state, tokens stored
 * encrypted). Browser-facing (strict CORS).
 *
 * - `POST /login {email, password}` → the session; a wrong password and an unknown email get the
 *   same `401 INVALID_CREDENTIALS`. Limits (shared/rate_limit.ts, Postgres, all instances):
 *   policy "login-ip" (`LOGIN_IP_LIMIT` per `LOGIN_WINDOW_SECONDS` per client IP, counted first,
 *   so a blocked IP cannot burn other people's per-email quota) then "login-email"
 *   (`LOGIN_EMAIL_LIMIT` per normalized email: NFKC, trimmed, lower-cased).
 *   The client IP is the rightmost `X-Forwarded-For` entry (the one Supabase's gateway wrote;
 *   see client_ip.ts for why not the leftmost), else the connection address, else "unknown".
 * - `POST /refresh {refresh_token}` → a new session; `POST /logout` (user JWT) → `200`.
 * - `GET /oauth/start` (user JWT) → `{"url"}`; `GET /oauth/callback?code&state` → `303` to the
 *   first `FRONTEND_URL` origin with `?broker=connected` or `?broker=error&reason=…`.
 * Supabase Auth unavailable or slow (`AUTH_TIMEOUT_MS`) → `503` (breaker "supabase-auth").
 */
import type { MiddlewareHandler } from "hono";
import { z } from "zod";
import { type AppEnv, defineFunction } from "../../shared/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { Unauthorized } from "../../shared/errors.ts";
import { requireJwt, verifyJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { rateLimit } from "../../shared/rate_limit.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { readJson } from "../../shared/validation.ts";
import { BrokerOAuth } from "./broker_oauth.ts";
import { clientIp } from "./client_ip.ts";
import { type GrantOutcome, SupabaseAuth } from "./supabase_auth.ts";
import { tokenKeyBase64 } from "./token_crypto.ts";

/** A URL compared byte for byte by the broker (`redirect_uri`): validated, never rewritten. */
const exactHttpUrl = z.string().url("must be an http(s) URL").refine(
  (v) => /^https?:\/\//.test(v),
  "must be an http(s) URL",
);

const Env = BrowserEnv.extend({
  SUPABASE_URL: httpUrl,
  SUPABASE_ANON_KEY: secret(20),
  BROKER_OAUTH_CLIENT_ID: secret(1),
  BROKER_OAUTH_CLIENT_SECRET: secret(8),
  BROKER_OAUTH_AUTHORIZE_URL: httpUrl,
  BROKER_OAUTH_TOKEN_URL: httpUrl,
  BROKER_OAUTH_REDIRECT_URL: exactHttpUrl,
  BROKER_TOKEN_KEY: tokenKeyBase64,
});

/** Canonical form of an email for counting attempts: NFKC, trimmed, lower-cased. */
export function normalizeEmail(email: string): string {
  return email.normalize("NFKC").trim().toLowerCase();
}

const LoginBody = z.object({
  email: z.string().max(320).transform(normalizeEmail).pipe(
    z.string().regex(/^[^\s@]+@[^\s@]+$/, "must be an email address"),
  ),
  password: z.string().min(1).max(1024),
}).strict();

const RefreshBody = z.object({ refresh_token: z.string().min(1).max(1024) }).strict();

/** The frontend's query values for the callback's outcome. */
const CallbackQuery = z.object({
  code: z.string().max(2048).optional(),
  state: z.string().max(256).optional(),
  error: z.string().max(256).optional(),
});

const authFunction = defineFunction({
  name: "auth",
  env: Env,
  browser: true,
  async build(app, ctx) {
    const l = ctx.limits;
    const cfg = ctx.config;
    const auth = new SupabaseAuth({
      url: cfg.SUPABASE_URL,
      anonKey: cfg.SUPABASE_ANON_KEY,
      timeoutMs: l.AUTH_TIMEOUT_MS,
      breaker: ctx.breakers.get("supabase-auth"),
      fetch: ctx.fetch,
    });
    const oauth = await BrokerOAuth.create({
      db: ctx.db,
      config: cfg,
      stateTtlSeconds: l.OAUTH_STATE_TTL_SECONDS,
      timeoutMs: l.HTTP_TIMEOUT_MS,
      breaker: ctx.breakers.get("broker-oauth", { isHealthy: BrokerOAuth.isHealthy }),
      fetch: ctx.fetch,
      now: ctx.now,
    });
    const frontend = cfg.FRONTEND_URL[0];
    // requireJwt is typed for `{claims}` only; it sets exactly that on AppEnv's context.
    const user = requireJwt({
      secret: cfg.SUPABASE_JWT_SECRET,
      role: "authenticated",
    }) as unknown as MiddlewareHandler<AppEnv>;
    const json = [bodyLimit(l.BODY_LIMIT_BYTES), contentType("application/json")];
    const window = { windowSeconds: l.LOGIN_WINDOW_SECONDS, db: ctx.db, now: ctx.now };
    const perIp = rateLimit({
      ...window,
      policy: "login-ip",
      quota: l.LOGIN_IP_LIMIT,
      key: (c) => clientIp(c, l.LOGIN_TRUSTED_PROXY_HOPS),
    });
    // The body is validated here, before counting: a malformed request is a 400 and costs the
    // email nothing. Hono caches the body, so the handler reads it again for free.
    const perEmail = rateLimit({
      ...window,
      policy: "login-email",
      quota: l.LOGIN_EMAIL_LIMIT,
      key: async (c) => (await readJson(c, LoginBody)).email,
    });
    const answer = (outcome: GrantOutcome, rejected: Unauthorized) => {
      if ("rejected" in outcome) throw rejected;
      return outcome.session;
    };

    route<AppEnv>(app, "/login", {
      POST: [...json, perIp, perEmail, async (c) => {
        const { email, password } = await readJson(c, LoginBody);
        const session = answer(
          await auth.signIn(email, password),
          new Unauthorized("The email or password is wrong.", "INVALID_CREDENTIALS"),
        );
        c.header("cache-control", "no-store");
        return c.json(session);
      }],
    });

    route<AppEnv>(app, "/refresh", {
      POST: [...json, async (c) => {
        const { refresh_token } = await readJson(c, RefreshBody);
        const session = answer(
          await auth.refresh(refresh_token),
          new Unauthorized("The refresh token is invalid or used.", "INVALID_REFRESH_TOKEN"),
        );
        c.header("cache-control", "no-store");
        return c.json(session);
      }],
    });

    route<AppEnv>(app, "/logout", {
      POST: [user, async (c) => {
        const jwt = c.req.header("authorization")!.slice("Bearer ".length);
        const { rejected } = await auth.signOut(jwt);
        // Auth no longer knows the session (already signed out): the goal is reached either way.
        return c.json({ signedOut: true, alreadySignedOut: rejected });
      }],
    });

    route<AppEnv>(app, "/oauth/start", {
      GET: [user, async (c) => {
        c.header("cache-control", "no-store");
        return c.json({ url: await oauth.authorizeUrl(c.var.claims.sub!) });
      }],
    });

    route<AppEnv>(app, "/oauth/callback", {
      GET: [async (c) => {
        const query = CallbackQuery.safeParse(c.req.query());
        // A JWT is optional here (a redirect from the broker carries none); if one is sent it
        // must belong to the user the state was issued to.
        const header = c.req.header("authorization");
        const callerId = header
          ? (await verifyJwt(header.replace(/^Bearer /, ""), {
            secret: cfg.SUPABASE_JWT_SECRET,
            role: "authenticated",
          })).sub
          : undefined;
        const outcome = query.success
          ? await oauth.complete(query.data, callerId)
          : { ok: false as const, reason: "invalid_request" as const };
        const target = new URL("/", frontend);
        if (outcome.ok) {
          target.searchParams.set("broker", "connected");
        } else {
          target.searchParams.set("broker", "error");
          target.searchParams.set("reason", outcome.reason);
          ctx.log.warn("broker connection failed", {
            requestId: c.var.requestId,
            reason: outcome.reason,
          });
        }
        // The callback URL carries the code: keep it out of caches and Referer headers.
        c.header("cache-control", "no-store");
        c.header("referrer-policy", "no-referrer");
        return c.redirect(target.toString(), 303);
      }],
    });
  },
});

export default authFunction;

if (import.meta.main) await serveStandalone(authFunction);
