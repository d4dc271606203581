/**
 * A simulated broker OAuth 2.0 server on loopback (Alpaca's OAuth flow), for the tests and the
 * sandbox: an authorize endpoint that approves at once for the sandbox user and redirects back
 * with `code` and `state`, and a token endpoint that exchanges each code exactly once.
 *
 * As Alpaca (https://docs.alpaca.markets/docs/using-oauth2-and-trading-api) and RFC 6749 §4.1:
 * `GET /oauth/authorize?response_type=code&client_id&redirect_uri&scope&state` redirects to
 * `redirect_uri?code=…&state=…`; `POST /oauth/token` takes a form-encoded
 * `grant_type=authorization_code&code&client_id&client_secret&redirect_uri` and answers
 * `{"access_token", "token_type": "bearer", "scope", "refresh_token", "expires_in"}`, or
 * `400 {"error": "invalid_grant"}` for a used, unknown or mismatched code.
 *
 * @example
 * ```ts
 * import { startBrokerOAuthSimulator } from "./broker_oauth.ts";
 *
 * const sim = await startBrokerOAuthSimulator({ clientId: "id", clientSecret: "secret" });
 * const query = "response_type=code&client_id=id&redirect_uri=http://127.0.0.1:5173/cb&state=s";
 * const res = await fetch(`${sim.authorizeUrl}?${query}`, { redirect: "manual" });
 * await sim.close();
 * ```
 */

export interface BrokerOAuthSimulatorOptions {
  clientId: string;
  clientSecret: string;
  /** The registered redirect URI; when unset any loopback http(s) URI is accepted (sandbox). */
  redirectUri?: string;
}

export interface IssuedTokens {
  access_token: string;
  refresh_token: string;
}

export interface BrokerOAuthSimulator {
  url: string;
  authorizeUrl: string;
  tokenUrl: string;
  /** Token-endpoint calls received (any outcome). */
  readonly calls: number;
  /** Tokens issued, in order (tests check that only ciphertext of them is stored). */
  readonly issued: IssuedTokens[];
  delayMs: number;
  /** The next `n` token calls answer `status` (`500` unless given; a `429` says Retry-After: 2). */
  failNext(n: number, status?: number): void;
  close(): Promise<void>;
}

const CODE_TTL_MS = 10 * 60_000;

export function startBrokerOAuthSimulator(
  opts: BrokerOAuthSimulatorOptions,
): Promise<BrokerOAuthSimulator> {
  /** Outstanding codes → the redirect URI they were issued for and when they expire. */
  const codes = new Map<string, { redirectUri: string; expiresAt: number }>();
  const issued: IssuedTokens[] = [];
  const state = { calls: 0, failures: 0, failureStatus: 500, delayMs: 0 };
  const controller = new AbortController();
  const json = (status: number, body: unknown) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", "cache-control": "no-store" },
    });
  const redirectAllowed = (uri: string) => {
    if (opts.redirectUri) return uri === opts.redirectUri;
    try {
      const u = new URL(uri);
      return /^https?:$/.test(u.protocol) && ["127.0.0.1", "localhost"].includes(u.hostname);
    } catch {
      return false;
    }
  };
  const random = () => {
    const bytes = crypto.getRandomValues(new Uint8Array(24));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  };

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen: () => {},
  }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/oauth/authorize") {
      const q = url.searchParams;
      const redirectUri = q.get("redirect_uri") ?? "";
      if (q.get("client_id") !== opts.clientId || !redirectAllowed(redirectUri)) {
        return json(400, { error: "invalid_request", error_description: "unknown client" });
      }
      const back = new URL(redirectUri);
      if (q.get("response_type") !== "code") {
        back.searchParams.set("error", "unsupported_response_type");
      } else {
        const code = random();
        codes.set(code, { redirectUri, expiresAt: Date.now() + CODE_TTL_MS });
        back.searchParams.set("code", code);
      }
      if (q.has("state")) back.searchParams.set("state", q.get("state")!);
      return new Response(null, { status: 302, headers: { location: back.toString() } });
    }
    if (req.method === "POST" && url.pathname === "/oauth/token") {
      state.calls++;
      if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
      if (state.failures > 0) {
        state.failures--;
        if (state.failureStatus === 429) {
          return new Response(JSON.stringify({ error: "rate_limited" }), {
            status: 429,
            headers: { "content-type": "application/json", "retry-after": "2" },
          });
        }
        return json(state.failureStatus, { error: "server_error" });
      }
      if (!/^application\/x-www-form-urlencoded/.test(req.headers.get("content-type") ?? "")) {
        return json(400, { error: "invalid_request" });
      }
      const form = new URLSearchParams(await req.text());
      if (
        form.get("client_id") !== opts.clientId || form.get("client_secret") !== opts.clientSecret
      ) {
        return json(401, { error: "invalid_client" });
      }
      if (form.get("grant_type") !== "authorization_code") {
        return json(400, { error: "unsupported_grant_type" });
      }
      const code = form.get("code") ?? "";
      const entry = codes.get(code);
      codes.delete(code); // a code is good for one exchange, whatever its outcome
      if (
        !entry || entry.expiresAt < Date.now() || entry.redirectUri !== form.get("redirect_uri")
      ) {
        return json(400, { error: "invalid_grant" });
      }
      const tokens = { access_token: random(), refresh_token: random() };
      issued.push(tokens);
      return json(200, {
        ...tokens,
        token_type: "bearer",
        scope: "account:write trading data",
        expires_in: 3600,
      });
    }
    return json(404, { error: "not_found" });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  // The simulator is its own state: tests read `calls` and steer `delayMs` directly.
  return Promise.resolve(Object.assign(state, {
    url: base,
    authorizeUrl: `${base}/oauth/authorize`,
    tokenUrl: `${base}/oauth/token`,
    issued,
    failNext(n: number, status = 500) {
      state.failures = n;
      state.failureStatus = status;
    },
    async close() {
      controller.abort();
      await server.finished;
    },
  }));
}
