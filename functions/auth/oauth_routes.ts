/**
 * auth's broker OAuth routes (broker_oauth.ts does the protocol), as factories over the broker
 * connection, with the guard that validates the callback's body into `c.var.callback`.
 *
 * - `GET /oauth/start` (user JWT) → `{"url"}`, the broker's authorize URL carrying `state`.
 * - `POST /oauth/callback {code, state}` (user JWT): the broker sends the browser back to
 *   `BROKER_OAUTH_REDIRECT_URL`, a page of the frontend, which posts what it received with the
 *   user's JWT. `200 {"connected": true}`; no token `401`; a state issued to another user `403`
 *   (RFC 6749 §10.12: nothing is exchanged or stored); a bad, used or expired state, or a code
 *   the broker refuses, `400`. A `GET` is `405`: a code is never exchanged by a bare redirect.
 * - Without the broker OAuth variables (config.ts), both answer `501 OAUTH_NOT_CONFIGURED`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Platform } from "../../shared/platform/platform.ts";
 * import type { AuthConfig } from "./config.ts";
 * import type { AuthVars } from "./handlers.ts";
 * import { brokerOAuth, notConfigured, oauthStart } from "./oauth_routes.ts";
 *
 * declare const platform: Platform;
 * declare const config: AuthConfig;
 * const app = new Hono<AuthVars>();
 * const oauth = await brokerOAuth({ ...platform, config });
 * app.get("/oauth/start", oauth ? oauthStart(oauth) : notConfigured);
 * ```
 */
import { userId } from "../../shared/auth/jwt.ts";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import * as z from "../../shared/zod.ts";
import { BadRequest, Forbidden, HttpError, MethodNotAllowed } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { readJson } from "../../shared/http/validation.ts";
import type { Platform } from "../../shared/platform/platform.ts";
import { BROKER, BrokerOAuth, type FailureReason } from "./broker_oauth.ts";
import { type AuthConfig, oauthConfig } from "./config.ts";
import type { AuthVars } from "./handlers.ts";

/** What the frontend's redirect page received from the broker, posted as it came. */
export const CallbackBody = z.object({
  code: z.string().min(1).max(2048),
  state: z.string().min(1).max(256),
}).strict();

/** `POST /oauth/callback`'s body. */
export type OAuthCallback = z.infer<typeof CallbackBody>;

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

/** What the broker connection is built from. */
export type BrokerOAuthContext =
  & Pick<Platform, "db" | "limits" | "breakers" | "fetch" | "now">
  & { config: AuthConfig };

/** The broker connection (breaker "broker-oauth"), or undefined without the OAuth variables. */
export async function brokerOAuth(ctx: BrokerOAuthContext): Promise<BrokerOAuth | undefined> {
  const config = oauthConfig(ctx.config);
  if (!config) return undefined;
  return await BrokerOAuth.create({
    db: ctx.db,
    config,
    stateTtlSeconds: ctx.limits.OAUTH_STATE_TTL_SECONDS,
    maxLiveStates: ctx.limits.OAUTH_LIVE_STATES_MAX,
    timeoutMs: ctx.limits.HTTP_TIMEOUT_MS,
    breaker: ctx.breakers.get("broker-oauth", { isHealthy: BrokerOAuth.isHealthy }),
    fetch: ctx.fetch,
    now: ctx.now,
  });
}

/** Both OAuth routes when the function runs without the OAuth variables: `501`. */
export function notConfigured(): never {
  throw new HttpError(
    501,
    "OAUTH_NOT_CONFIGURED",
    "Broker OAuth is not configured on this server.",
  );
}

/** The callback body, validated strictly. */
export const validCallback = createMiddleware<AuthVars>(async function validCallback(c, next) {
  c.set("callback", await readJson(c, CallbackBody));
  await next();
});

/**
 * `HEAD /oauth/start` answers `405`: Hono serves HEAD with the GET handler, and every start
 * stores a state (issue 25, finding 2: HEAD created them too); a HEAD has no effect.
 */
export async function noHead(c: Context, next: () => Promise<void>): Promise<void> {
  if (c.req.method === "HEAD") throw new MethodNotAllowed(["GET"]);
  await next();
}

/** `GET /oauth/start`: the broker's authorize URL, its state bound to the caller. */
export function oauthStart(oauth: BrokerOAuth) {
  return async function oauthStart(c: Context<AuthVars>): Promise<Response> {
    c.header("cache-control", "no-store");
    return c.json({ url: await oauth.authorizeUrl(userId(c)) });
  };
}

/** `POST /oauth/callback`: exchanges `c.var.callback`'s code and stores the tokens, or refuses. */
export function oauthCallback(oauth: BrokerOAuth, log: Logger) {
  return async function oauthCallback(c: Context<AuthVars>): Promise<Response> {
    const outcome = await oauth.complete(c.var.callback, userId(c));
    c.header("cache-control", "no-store");
    if (outcome.ok) return c.json({ connected: true, broker: BROKER });
    log.warn("broker connection refused", { requestId: c.var.requestId, reason: outcome.reason });
    throw CALLBACK_FAILURES[outcome.reason]();
  };
}
