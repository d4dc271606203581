/**
 * Supabase Auth (GoTrue) through `@supabase/supabase-js`, made safe for a server shared by many
 * users: every call has a deadline (`AUTH_TIMEOUT_MS`, through `fetchWithDeadline` as the
 * client's `global.fetch`), runs through the "supabase-auth" breaker, and keeps no session.
 *
 * Why no shared session: supabase-js is a browser client; `signInWithPassword` saves the session
 * it gets into the client's storage, and `refreshSession` coalesces concurrent refreshes into one
 * (auth-js `_callRefreshToken` hands every caller the in-flight result), so on one shared client
 * two users refreshing at once could receive the same session. The instance therefore keeps ONE
 * `SupabaseClient` (configuration, and `auth.admin.signOut(jwt)`, which is stateless), and runs
 * each token grant on a request-scoped `AuthClient` with the same URL, key and fetch whose memory
 * storage is dropped with the request (https://supabase.com/docs/reference/javascript/initializing,
 * "persistSession: false" for server-side use).
 *
 * supabase-js is imported on the first call, not at boot: it is a large module graph, and an
 * instance that only answers preflights, 401s or OAuth never needs it (cold start).
 *
 * @example
 * ```ts
 * import { breakerSettings } from "../../shared/platform/platform.ts";
 * import { Breakers } from "../../shared/resilience/circuit_breaker.ts";
 * import { parseLimits } from "../../shared/limits.ts";
 * import { SupabaseAuth } from "./supabase_auth.ts";
 *
 * const auth = new SupabaseAuth({
 *   url: "https://project.supabase.co",
 *   anonKey: "the-project-anon-key",
 *   timeoutMs: 5000,
 *   breaker: new Breakers(breakerSettings(parseLimits({}))).get("supabase-auth"),
 * });
 * // { session } | { rejected: true }
 * const outcome = await auth.signIn("trader@example.com", "correct horse");
 * ```
 */
import type { AuthClient, SupabaseClient } from "@supabase/supabase-js";
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import { UpstreamUnavailable } from "../../shared/errors.ts";
import { fetchWithDeadline } from "../../shared/resilience/http_client.ts";

export interface SupabaseAuthOptions {
  /** `SUPABASE_URL` (the project; Auth is at `/auth/v1`). */
  url: string;
  anonKey: string;
  timeoutMs: number;
  breaker: Breaker;
  fetch?: typeof fetch;
}

/** What the function answers with after a grant. */
export interface SessionOut {
  access_token: string;
  token_type: string;
  expires_in: number;
  expires_at?: number;
  refresh_token: string;
  user: { id: string; email?: string };
}

export type GrantOutcome = { session: SessionOut } | { rejected: true };

const UPSTREAM = "Supabase Auth";

type SupabaseJs = typeof import("@supabase/supabase-js");

export class SupabaseAuth {
  readonly #url: string;
  readonly #anonKey: string;
  readonly #breaker: Breaker;
  readonly #authUrl: string;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;
  #lib?: Promise<{ js: SupabaseJs; client: SupabaseClient }>;

  constructor(opts: SupabaseAuthOptions) {
    const base = opts.fetch ?? fetch;
    this.#fetch =
      ((input: RequestInfo | URL, init?: RequestInit) =>
        fetchWithDeadline(input instanceof Request ? input.url : input, init ?? {}, {
          timeoutMs: opts.timeoutMs,
          upstream: UPSTREAM,
          fetch: base,
        })) as typeof fetch;
    this.#url = opts.url;
    this.#anonKey = opts.anonKey;
    this.#breaker = opts.breaker;
    this.#authUrl = `${opts.url}/auth/v1`;
    this.#headers = { apikey: opts.anonKey, authorization: `Bearer ${opts.anonKey}` };
  }

  /** supabase-js and the instance's one client, loaded on first use. */
  #load(): Promise<{ js: SupabaseJs; client: SupabaseClient }> {
    if (!this.#lib) {
      const lib = import("@supabase/supabase-js").then((js) => ({
        js,
        client: js.createClient(this.#url, this.#anonKey, {
          auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
          global: { fetch: this.#fetch },
        }),
      }));
      // A failed import is not kept: the next call tries again.
      lib.catch(() => {
        if (this.#lib === lib) this.#lib = undefined;
      });
      this.#lib = lib;
    }
    return this.#lib;
  }

  /** The password grant. Wrong password and unknown email are the same `rejected`. */
  signIn(email: string, password: string): Promise<GrantOutcome> {
    return this.#grant((auth) => auth.signInWithPassword({ email, password }));
  }

  /** The refresh-token grant (GoTrue rotates the refresh token). */
  refresh(refreshToken: string): Promise<GrantOutcome> {
    return this.#grant((auth) => auth.refreshSession({ refresh_token: refreshToken }));
  }

  /** Revokes the session of `jwt` (all of the user's refresh tokens: scope global). */
  async signOut(jwt: string): Promise<{ rejected: boolean }> {
    const { client } = await this.#load();
    return await this.#breaker.run(async () => {
      const { error } = await client.auth.admin.signOut(jwt, "global");
      if (!error) return { rejected: false };
      throwIfUnavailable(error);
      return { rejected: true };
    });
  }

  /** One grant on a request-scoped client; 5xx, 429 and network failures throw 503. */
  async #grant(
    call: (
      auth: InstanceType<typeof AuthClient>,
    ) => Promise<{ data: { session: unknown }; error: unknown }>,
  ): Promise<GrantOutcome> {
    const { js } = await this.#load();
    return await this.#breaker.run(async () => {
      const auth = new js.AuthClient({
        url: this.#authUrl,
        headers: this.#headers,
        fetch: this.#fetch,
        persistSession: false,
        autoRefreshToken: false,
        detectSessionInUrl: false,
      });
      const { data, error } = await call(auth);
      if (error) {
        throwIfUnavailable(error);
        return { rejected: true as const };
      }
      const s = data.session as SessionOut | null;
      if (!s?.access_token || !s.refresh_token || !s.user?.id) {
        throw new UpstreamUnavailable(UPSTREAM, "unusable answer");
      }
      return {
        session: {
          access_token: s.access_token,
          token_type: s.token_type,
          expires_in: s.expires_in,
          expires_at: s.expires_at,
          refresh_token: s.refresh_token,
          user: { id: s.user.id, email: s.user.email },
        },
      };
    });
  }
}

/** A 4xx other than 429 is a rejection of the credentials; anything else is Auth being unwell. */
function throwIfUnavailable(error: unknown): void {
  const status = (error as { status?: unknown })?.status;
  const name = (error as { name?: unknown })?.name;
  if (name === "AuthRetryableFetchError" || typeof status !== "number" || status === 0) {
    throw new UpstreamUnavailable(UPSTREAM, "unreachable or timed out", 1000, error);
  }
  if (status === 429) throw new UpstreamUnavailable(UPSTREAM, "rate limited", 10_000, error);
  if (status >= 500) throw new UpstreamUnavailable(UPSTREAM, `HTTP ${status}`, 1000, error);
}
