/**
 * A simulated Supabase Auth (GoTrue) on loopback, for the tests and the sandbox: the password and
 * refresh-token grants of `POST /auth/v1/token` and `POST /auth/v1/logout`, with GoTrue's answers.
 *
 * As GoTrue: every call needs the project's `apikey` header; the access token is an ES256 JWT
 * with a `kid` (`role` and `aud` `authenticated`, `sub`, `email`, `exp`), verifiable against the
 * JWKS at `GET /auth/v1/.well-known/jwks.json`, as hosted Supabase signs them today;
 * a wrong password and an unknown email both answer `400 {"error": "invalid_grant",
 * "error_description": "Invalid login credentials"}`; refresh tokens rotate (a used one is
 * refused); logout revokes the user's refresh tokens and answers `204`.
 * (https://supabase.com/docs/reference/api/auth, https://github.com/supabase/auth)
 *
 * @example
 * ```ts
 * import { createClient } from "@supabase/supabase-js";
 * import { startSupabaseAuthSimulator } from "./supabase_auth.ts";
 *
 * const anonKey = "sb_publishable_sandbox";
 * const [email, password] = ["trader@example.com", "correct horse battery staple"];
 * const sim = await startSupabaseAuthSimulator({
 *   anonKey,
 *   users: [{ id: crypto.randomUUID(), email, password }],
 * });
 * await createClient(sim.url, anonKey).auth.signInWithPassword({ email, password });
 * await sim.close();
 * ```
 */
import { loadSigningKey, type SigningKey } from "./signing_key.ts";

export interface SimulatedUser {
  id: string;
  email: string;
  password: string;
}

export interface SupabaseAuthSimulatorOptions {
  /** The project's signing key (ES256). Default a new one. */
  signingKey?: SigningKey;
  /** The `apikey` callers must send (the project's anon key); `apiKeys` adds others. */
  anonKey: string;
  apiKeys?: string[];
  users: SimulatedUser[];
  /** Access token lifetime. Default 3600 s. */
  expiresIn?: number;
  /** The tokens' `iss` (`$SUPABASE_URL/auth/v1`); default the URL the simulator is reached at. */
  issuer?: string;
}

export interface SupabaseAuthSimulator {
  /** The project URL (`SUPABASE_URL`); Auth is at `${url}/auth/v1`. */
  url: string;
  /** Answers `/auth/v1/*` in-process (the local server mounts it on its own port). */
  handler(req: Request): Promise<Response>;
  /** Calls received, by path and grant (e.g. `token:password`, `logout`). */
  readonly calls: string[];
  /** While true, every call answers `503`. */
  down: boolean;
  delayMs: number;
  /** The next `n` calls answer `500`. */
  failNext(n: number): void;
  close(): Promise<void>;
}

export async function startSupabaseAuthSimulator(
  options: SupabaseAuthSimulatorOptions,
): Promise<SupabaseAuthSimulator> {
  const opts = { ...options, signingKey: options.signingKey ?? await loadSigningKey() };
  const users = new Map(opts.users.map((u) => [u.email.toLowerCase(), { ...u }]));
  const expiresIn = opts.expiresIn ?? 3600;
  /** Live refresh tokens → user id. */
  const refreshTokens = new Map<string, string>();
  const calls: string[] = [];
  const state = { down: false, delayMs: 0, failures: 0 };
  const controller = new AbortController();
  const json = (status: number, body: unknown) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json" },
    });
  const invalidGrant = (description: string) =>
    json(400, { error: "invalid_grant", error_description: description });

  // As GoTrue: `iss` is the project's Auth URL, here the URL the simulator was reached at (its
  // own, or the local server's that mounts it).
  const session = async (user: SimulatedUser, iss: string) => {
    const now = Math.floor(Date.now() / 1000);
    const refresh = crypto.randomUUID().replaceAll("-", "");
    refreshTokens.set(refresh, user.id);
    return {
      access_token: await opts.signingKey.sign({
        iss,
        aud: "authenticated",
        role: "authenticated",
        sub: user.id,
        email: user.email,
        session_id: crypto.randomUUID(),
        is_anonymous: false,
      }, expiresIn),
      token_type: "bearer",
      expires_in: expiresIn,
      expires_at: now + expiresIn,
      refresh_token: refresh,
      user: {
        id: user.id,
        aud: "authenticated",
        role: "authenticated",
        email: user.email,
        app_metadata: { provider: "email", providers: ["email"] },
        user_metadata: {},
        created_at: "2026-01-01T00:00:00Z",
      },
    };
  };

  const apiKeys = new Set([opts.anonKey, ...(opts.apiKeys ?? [])]);
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === "/auth/v1/.well-known/jwks.json" && req.method === "GET") {
      return json(200, opts.signingKey.jwks);
    }
    if (!apiKeys.has(req.headers.get("apikey") ?? "")) {
      return json(401, { message: "No API key found in request" });
    }
    const grant = url.searchParams.get("grant_type");
    calls.push(url.pathname === "/auth/v1/token" ? `token:${grant}` : url.pathname.slice(9));
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    if (state.down) return json(503, { message: "upstream unavailable" });
    if (state.failures > 0) {
      state.failures--;
      return json(500, { code: 500, msg: "Internal Server Error" });
    }
    if (req.method !== "POST") return json(405, { message: "Method Not Allowed" });
    let body: Record<string, unknown> = {};
    try {
      const text = await req.text();
      body = text ? JSON.parse(text) : {};
    } catch {
      return json(400, { error: "invalid_request", error_description: "Could not read body" });
    }
    if (url.pathname === "/auth/v1/token" && grant === "password") {
      const user = users.get(String(body.email ?? "").toLowerCase());
      if (!user || user.password !== body.password) {
        return invalidGrant("Invalid login credentials");
      }
      return json(200, await session(user, opts.issuer ?? `${url.origin}/auth/v1`));
    }
    if (url.pathname === "/auth/v1/token" && grant === "refresh_token") {
      const userId = refreshTokens.get(String(body.refresh_token ?? ""));
      const user = [...users.values()].find((u) => u.id === userId);
      if (!user) return invalidGrant("Invalid Refresh Token: Refresh Token Not Found");
      refreshTokens.delete(String(body.refresh_token));
      return json(200, await session(user, opts.issuer ?? `${url.origin}/auth/v1`));
    }
    if (url.pathname === "/auth/v1/logout") {
      const token = /^Bearer (\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
      const sub = token
        ? (await opts.signingKey.verify(token))?.sub as string | undefined
        : undefined;
      if (!sub) return json(401, { code: 401, msg: "invalid JWT" });
      for (const [t, id] of refreshTokens) if (id === sub) refreshTokens.delete(t);
      return new Response(null, { status: 204 });
    }
    return json(404, { code: 404, msg: "Not Found" });
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: () => {},
  }, handler);

  // The simulator is its own state: tests steer it by setting `down` and `delayMs`.
  return (Object.assign(state, {
    url: `http://127.0.0.1:${server.addr.port}`,
    handler,
    calls,
    failNext(n: number) {
      state.failures = n;
    },
    async close() {
      controller.abort();
      await server.finished;
    },
  }));
}
