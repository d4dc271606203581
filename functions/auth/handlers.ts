/**
 * auth's session routes, as factories over Supabase Auth, with the guards that validate their
 * bodies and the variables they share declared once (Hono's `Variables` pattern): the guards set
 * `c.var.login` and `c.var.refresh` (and oauth_routes.ts's `c.var.callback`), the handlers read
 * them.
 *
 * - `POST /login {email, password}` → the session; a wrong password and an unknown email get the
 *   same `401 INVALID_CREDENTIALS`. Counted per client IP, then per normalized email
 *   (attempt_limits.ts).
 * - `POST /refresh {refresh_token}` → a new session; a used or unknown token `401
 *   INVALID_REFRESH_TOKEN`.
 * - `POST /logout` (user JWT) → `200 {signedOut, alreadySignedOut}`.
 * Supabase Auth unavailable or slow (`AUTH_TIMEOUT_MS`) → `503` (supabase_auth.ts).
 *
 * @example
 * ```ts
 * import { breakerSettings } from "../../shared/platform/platform.ts";
 * import { Hono } from "hono";
 * import { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 * import { type AuthVars, login, validLogin } from "./handlers.ts";
 * import { SupabaseAuth } from "./supabase_auth.ts";
 *
 * const auth = new SupabaseAuth({
 *   url: "https://project.supabase.co",
 *   anonKey: "the-project-anon-key",
 *   timeoutMs: 5_000,
 *   breaker: new Breakers(breakerSettings(parseLimits({}))).get("supabase-auth"),
 * });
 * const app = new Hono<AuthVars>();
 * app.post("/login", validLogin, login(auth));
 * ```
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import * as z from "../../shared/zod.ts";
import type { AppEnv } from "../../shared/platform/app.ts";
import { Unauthorized } from "../../shared/errors.ts";
import { bearer } from "../../shared/auth/jwt.ts";
import { readJson } from "../../shared/http/validation.ts";
import type { OAuthCallback } from "./oauth_routes.ts";
import type { GrantOutcome, SessionOut, SupabaseAuth } from "./supabase_auth.ts";

/** Canonical form of an email for counting attempts: NFKC, trimmed, lower-cased. */
export function normalizeEmail(email: string): string {
  return email.normalize("NFKC").trim().toLowerCase();
}

/** `POST /login`'s body (the email is normalized before it is checked). */
export const LoginBody = z.object({
  email: z.string().max(320).transform(normalizeEmail).pipe(
    z.string().regex(/^[^\s@]+@[^\s@]+$/, "must be an email address"),
  ),
  password: z.string().min(1).max(1024),
}).strict();

/** `POST /refresh`'s body. */
export const RefreshBody = z.object({ refresh_token: z.string().min(1).max(1024) }).strict();

/** What auth's guards give its handlers. */
export type AuthVars = {
  Variables: AppEnv["Variables"] & {
    /** `POST /login`'s body, the email normalized. */
    login: z.infer<typeof LoginBody>;
    /** `POST /refresh`'s body. */
    refresh: z.infer<typeof RefreshBody>;
    /** `POST /oauth/callback`'s body. */
    callback: OAuthCallback;
  };
};

/** The login body, validated strictly (a malformed one is a `400` and costs the email nothing). */
export const validLogin = createMiddleware<AuthVars>(async function validLogin(c, next) {
  c.set("login", await readJson(c, LoginBody));
  await next();
});

/** The refresh body, validated strictly. */
export const validRefresh = createMiddleware<AuthVars>(async function validRefresh(c, next) {
  c.set("refresh", await readJson(c, RefreshBody));
  await next();
});

/** The session of a grant, or `rejected` thrown. */
function sessionOf(outcome: GrantOutcome, rejected: Unauthorized): SessionOut {
  if ("rejected" in outcome) throw rejected;
  return outcome.session;
}

/** `POST /login`: signs `c.var.login` in; a wrong password and an unknown email look the same. */
export function login(auth: SupabaseAuth) {
  return async function login(c: Context<AuthVars>): Promise<Response> {
    const { email, password } = c.var.login;
    const session = sessionOf(
      await auth.signIn(email, password),
      new Unauthorized("The email or password is wrong.", "INVALID_CREDENTIALS"),
    );
    c.header("cache-control", "no-store");
    return c.json(session);
  };
}

/** `POST /refresh`: trades `c.var.refresh`'s token for a new session. */
export function refresh(auth: SupabaseAuth) {
  return async function refresh(c: Context<AuthVars>): Promise<Response> {
    const session = sessionOf(
      await auth.refresh(c.var.refresh.refresh_token),
      new Unauthorized("The refresh token is invalid or used.", "INVALID_REFRESH_TOKEN"),
    );
    c.header("cache-control", "no-store");
    return c.json(session);
  };
}

/** `POST /logout` (after `requireJwt`): revokes the caller's session at Supabase Auth. */
export function logout(auth: SupabaseAuth) {
  return async function logout(c: Context<AuthVars>): Promise<Response> {
    const jwt = bearer(c.req.header("authorization"));
    // requireJwt has verified this very token; the check only spares a non-null assertion.
    if (!jwt) throw new Unauthorized("Send Authorization: Bearer <token>.", "MISSING_TOKEN");
    const { rejected } = await auth.signOut(jwt);
    // Auth no longer knows the session (already signed out): the goal is reached either way.
    return c.json({ signedOut: true, alreadySignedOut: rejected });
  };
}
