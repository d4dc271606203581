/**
 * auth: login, refresh and logout through Supabase Auth, with brute-force limits that hold across
 * instances, and connecting a broker account with OAuth (signed single-use state bound to the
 * user who started the flow, tokens stored encrypted). Browser-facing (strict CORS).
 *
 * - `POST /login {email, password}` → the session; a wrong password and an unknown email get the
 *   same `401 INVALID_CREDENTIALS`. Limits (shared/rate_limit.ts, Postgres, all instances):
 *   policy "login-ip" (`LOGIN_IP_LIMIT` per `LOGIN_WINDOW_SECONDS` per client IP, counted first,
 *   so a blocked IP cannot burn other people's per-email quota) then "login-email"
 *   (`LOGIN_EMAIL_LIMIT` per normalized email: NFKC, trimmed, lower-cased).
 *   The client IP is the rightmost `X-Forwarded-For` entry (the one Supabase's gateway wrote;
 *   see client_ip.ts for why not the leftmost), else the connection address, else "unknown".
 * - `POST /refresh {refresh_token}` → a new session; `POST /logout` (user JWT) → `200`. Each
 *   costs a call to Supabase Auth, whose own per-IP limits see only this function's address, so
 *   each is limited per client IP too: "refresh-ip" (`REFRESH_IP_LIMIT`) and "logout-ip"
 *   (`LOGOUT_IP_LIMIT`) per `LOGIN_WINDOW_SECONDS`, counted before anything else.
 * - `GET /oauth/start` (user JWT) → `{"url"}`, the broker's authorize URL carrying `state`.
 * - `POST /oauth/callback {code, state}` (user JWT): the broker sends the browser back to
 *   `BROKER_OAUTH_REDIRECT_URL`, a page of the frontend, which posts what it received with the
 *   user's JWT. `200 {"connected": true}`; no token `401`; a state issued to another user `403`
 *   (RFC 6749 §10.12: nothing is exchanged or stored); a bad, used or expired state, or a code
 *   the broker refuses, `400`. A `GET` is `405`: a code is never exchanged by a bare redirect.
 * - Broker OAuth is optional: the six `BROKER_OAUTH_*`/`BROKER_TOKEN_KEY` variables are all or
 *   none (some → the function does not boot, naming the missing ones); with none, `/oauth/*`
 *   answers `501 OAUTH_NOT_CONFIGURED` and everything else serves.
 * Supabase Auth unavailable or slow (`AUTH_TIMEOUT_MS`) → `503` (breaker "supabase-auth").
 */
import type { Context, MiddlewareHandler } from "hono";
import { z } from "zod";
import { type AppEnv, defineFunction } from "../../shared/app.ts";
import { BrowserEnv } from "../../shared/base_env.ts";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import { httpUrl, secret } from "../../shared/env.ts";
import { BadRequest, Forbidden, HttpError, Unauthorized } from "../../shared/errors.ts";
import { bearer, requireJwt } from "../../shared/jwt.ts";
import { route } from "../../shared/methods.ts";
import { rateLimit } from "../../shared/rate_limit.ts";
import { serveStandalone } from "../../shared/standalone.ts";
import { readJson } from "../../shared/validation.ts";
import { BROKER, BrokerOAuth, type BrokerOAuthConfig, type FailureReason } from "./broker_oauth.ts";
import { clientIp } from "./client_ip.ts";
import { type GrantOutcome, SupabaseAuth } from "./supabase_auth.ts";
import { tokenKeyBase64 } from "./token_crypto.ts";

/** A URL compared byte for byte by the broker (`redirect_uri`): validated, never rewritten. */
const exactHttpUrl = z.string().url("must be an http(s) URL").refine(
  (v) => /^https?:\/\//.test(v),
  "must be an http(s) URL",
);

/** The broker OAuth group: all or none (contract, Environment). */
const OAUTH_VARIABLES = [
  "BROKER_OAUTH_CLIENT_ID",
  "BROKER_OAUTH_CLIENT_SECRET",
  "BROKER_OAUTH_AUTHORIZE_URL",
  "BROKER_OAUTH_TOKEN_URL",
  "BROKER_OAUTH_REDIRECT_URL",
  "BROKER_TOKEN_KEY",
] as const satisfies readonly (keyof BrokerOAuthConfig)[];

const Env = BrowserEnv.extend({
  SUPABASE_URL: httpUrl,
  SUPABASE_ANON_KEY: secret(20),
  BROKER_OAUTH_CLIENT_ID: secret(1).optional(),
  BROKER_OAUTH_CLIENT_SECRET: secret(8).optional(),
  BROKER_OAUTH_AUTHORIZE_URL: httpUrl.optional(),
  BROKER_OAUTH_TOKEN_URL: httpUrl.optional(),
  BROKER_OAUTH_REDIRECT_URL: exactHttpUrl.optional(),
  BROKER_TOKEN_KEY: tokenKeyBase64.optional(),
}).superRefine((env, ctx) => {
  const missing = OAUTH_VARIABLES.filter((name) => env[name] === undefined);
  if (missing.length === 0 || missing.length === OAUTH_VARIABLES.length) return;
  for (const name of missing) {
    ctx.addIssue({
      code: "custom",
      path: [name],
      message: "must be set: broker OAuth needs all of its variables, or none",
    });
  }
  // Checked even when other variables are invalid, so the boot error names every problem.
}, { when: () => true });

type Config = z.infer<typeof Env>;

/** The broker OAuth configuration when the group is set (the schema has refused a partial one). */
function oauthConfig(cfg: Config): BrokerOAuthConfig | undefined {
  const {
    BROKER_OAUTH_CLIENT_ID,
    BROKER_OAUTH_CLIENT_SECRET,
    BROKER_OAUTH_AUTHORIZE_URL,
    BROKER_OAUTH_TOKEN_URL,
    BROKER_OAUTH_REDIRECT_URL,
    BROKER_TOKEN_KEY,
  } = cfg;
  if (
    !BROKER_OAUTH_CLIENT_ID || !BROKER_OAUTH_CLIENT_SECRET || !BROKER_OAUTH_AUTHORIZE_URL ||
    !BROKER_OAUTH_TOKEN_URL || !BROKER_OAUTH_REDIRECT_URL || !BROKER_TOKEN_KEY
  ) return undefined;
  return {
    BROKER_OAUTH_CLIENT_ID,
    BROKER_OAUTH_CLIENT_SECRET,
    BROKER_OAUTH_AUTHORIZE_URL,
    BROKER_OAUTH_TOKEN_URL,
    BROKER_OAUTH_REDIRECT_URL,
    BROKER_TOKEN_KEY,
  };
}

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

/** What the frontend's redirect page received from the broker, posted as it came. */
const CallbackBody = z.object({
  code: z.string().min(1).max(2048),
  state: z.string().min(1).max(256),
}).strict();

/** The answer to each way a callback can fail (the broker being down is a thrown 503). */
const CALLBACK_FAILURES: Record<FailureReason, () => HttpError> = {
  invalid_state: () =>
    new BadRequest("The OAuth state is not valid or was already used.", "OAUTH_STATE_INVALID"),
  expired_state: () =>
    new BadRequest("The OAuth state has expired; start again.", "OAUTH_STATE_EXPIRED"),
  wrong_user: () =>
    new Forbidden(
      "This broker connection was started by another user; start it from your own account.",
      "OAUTH_STATE_FORBIDDEN",
    ),
  exchange_refused: () =>
    new BadRequest("The broker refused the authorization code.", "OAUTH_CODE_REJECTED"),
};

/** Broker OAuth routes when the function runs without the OAuth variables. */
function notConfigured(): never {
  throw new HttpError(
    501,
    "OAUTH_NOT_CONFIGURED",
    "Broker OAuth is not configured on this server.",
  );
}

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
    const brokerConfig = oauthConfig(cfg);
    const oauth = brokerConfig && await BrokerOAuth.create({
      db: ctx.db,
      config: brokerConfig,
      stateTtlSeconds: l.OAUTH_STATE_TTL_SECONDS,
      timeoutMs: l.HTTP_TIMEOUT_MS,
      breaker: ctx.breakers.get("broker-oauth", { isHealthy: BrokerOAuth.isHealthy }),
      fetch: ctx.fetch,
      now: ctx.now,
    });
    if (!oauth) ctx.log.info("broker OAuth is not configured; /oauth/* answers 501");
    // requireJwt is typed for `{claims}` only; it sets exactly that on AppEnv's context.
    const user = requireJwt({
      tokens: ctx.tokens,
      role: "authenticated",
    }) as unknown as MiddlewareHandler<AppEnv>;
    const json = [bodyLimit(l.BODY_LIMIT_BYTES), contentType("application/json")];
    const window = { windowSeconds: l.LOGIN_WINDOW_SECONDS, db: ctx.db, now: ctx.now };
    const byIp = (c: Context) => clientIp(c, l.LOGIN_TRUSTED_PROXY_HOPS);
    const perIp = rateLimit({ ...window, policy: "login-ip", quota: l.LOGIN_IP_LIMIT, key: byIp });
    // The body is validated here, before counting: a malformed request is a 400 and costs the
    // email nothing. Hono caches the body, so the handler reads it again for free.
    const perEmail = rateLimit({
      ...window,
      policy: "login-email",
      quota: l.LOGIN_EMAIL_LIMIT,
      key: async (c) => (await readJson(c, LoginBody)).email,
    });
    const refreshPerIp = rateLimit({
      ...window,
      policy: "refresh-ip",
      quota: l.REFRESH_IP_LIMIT,
      key: byIp,
    });
    const logoutPerIp = rateLimit({
      ...window,
      policy: "logout-ip",
      quota: l.LOGOUT_IP_LIMIT,
      key: byIp,
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
      POST: [...json, refreshPerIp, async (c) => {
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
      POST: [logoutPerIp, user, async (c) => {
        const jwt = bearer(c.req.header("authorization"))!;
        const { rejected } = await auth.signOut(jwt);
        // Auth no longer knows the session (already signed out): the goal is reached either way.
        return c.json({ signedOut: true, alreadySignedOut: rejected });
      }],
    });

    if (!oauth) {
      route<AppEnv>(app, "/oauth/start", { GET: [notConfigured] });
      route<AppEnv>(app, "/oauth/callback", { POST: [notConfigured] });
      return;
    }

    route<AppEnv>(app, "/oauth/start", {
      GET: [user, async (c) => {
        c.header("cache-control", "no-store");
        return c.json({ url: await oauth.authorizeUrl(c.var.claims.sub!) });
      }],
    });

    route<AppEnv>(app, "/oauth/callback", {
      POST: [user, ...json, async (c) => {
        const body = await readJson(c, CallbackBody);
        const outcome = await oauth.complete(body, c.var.claims.sub!);
        c.header("cache-control", "no-store");
        if (outcome.ok) return c.json({ connected: true, broker: BROKER });
        ctx.log.warn("broker connection refused", {
          requestId: c.var.requestId,
          reason: outcome.reason,
        });
        throw CALLBACK_FAILURES[outcome.reason]();
      }],
    });
  },
});

export default authFunction;

if (import.meta.main) await serveStandalone(authFunction);
