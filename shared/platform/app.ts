/**
 * How a function is declared: the environment it needs and how it builds its routes on a Hono
 * app that already has the suite's standard stack (platform/boot.ts). A function's `index.ts` is
 * one `defineFunction` call: which guards, in which order, then the handler.
 *
 * **The one guard order**, after that stack, for every route of every function:
 * 1. the caller: `requireJwt` (user or service role), or a webhook's signature;
 * 2. rate limits keyed by the caller or the client IP (they cost one statement, never a body);
 * 3. `contentType`, then `bodyLimit`;
 * 4. validation of the body or query into a typed variable (`c.var.<name>`);
 * 5. rate limits keyed by what the body names (login's per-email limit);
 * 6. idempotency;
 * 7. the handler.
 * Cheap refusals come first, so a request refused by an earlier guard costs nothing later. One
 * exception: a per-IP limit that must also count unauthenticated calls (auth's logout, which
 * costs a call to Supabase Auth whatever the token) comes before the caller.
 *
 * @example
 * ```ts
 * import { defineFunction } from "./app.ts";
 * import { BaseEnv } from "../base_env.ts";
 *
 * export default defineFunction({
 *   name: "status",
 *   env: BaseEnv,
 *   browser: false,
 *   build(app, ctx) {
 *     app.get("/", async (c) => c.json({ status: "ok", latencyMs: await ctx.db.ping() }));
 *   },
 * });
 * ```
 */
import type { Hono } from "hono";
import type * as z from "../zod.ts";
import type { JwtVariables, TokenVerifier } from "../auth/jwt.ts";
import type { RequestIdVariables } from "../http/request_id.ts";
import type { Platform } from "./platform.ts";

/**
 * Hono variables every handler can read: the request id, and once `requireJwt` ran, the caller's
 * claims and (for users) `userId`. A function adds its own guards' variables to these
 * (`{ Variables: AppVariables & { order: OrderRequest } }`) and declares that type in
 * `defineFunction`, so handlers read `c.var.order` without casts.
 */
export type AppVariables = RequestIdVariables & JwtVariables;

/** The Hono environment of every function's app. */
export interface AppEnv {
  Variables: AppVariables;
}

/** A function's app, typed with its variables. */
export type App<E extends AppEnv = AppEnv> = Hono<E>;

/** What a function's `build` receives: the platform, its own configuration and verifier. */
export interface FunctionContext<E> extends Platform {
  /** This function's validated environment. */
  config: E;
  name: string;
  /** The project's token and service-key verifier, built from this function's configuration. */
  tokens: TokenVerifier;
}

export interface FunctionDefinition<S extends z.ZodType = z.ZodType, E extends AppEnv = AppEnv> {
  name: string;
  /** The variables this function needs; validated at boot. */
  env: S;
  /**
   * Browser-facing: strict CORS from `FRONTEND_URL` (which the env schema must then require).
   * A preflight may ask for exactly the methods the function routes, and `OPTIONS`.
   */
  browser: boolean;
  build(app: App<E>, ctx: FunctionContext<z.infer<S>>): void | Promise<void>;
}

/** Declares a function (typing helper; `E` names the variables its guards set). */
export function defineFunction<S extends z.ZodType, E extends AppEnv = AppEnv>(
  def: FunctionDefinition<S, E>,
): FunctionDefinition<S, E> {
  return def;
}
