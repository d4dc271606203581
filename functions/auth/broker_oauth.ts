/**
 * Connecting a broker account with OAuth 2.0 (authorization code grant, as Alpaca's OAuth:
 * https://docs.alpaca.markets/docs/using-oauth2-and-trading-api): the authorize URL with a signed,
 * single-use, expiring `state`; and the callback, which checks the state, exchanges the code and
 * stores the connection with its encrypted tokens.
 *
 * The callback is completed by the user who started the flow, and only by them (RFC 6749
 * §10.12): the broker redirects the browser to a page of the frontend, which posts the `code`
 * and `state` with the user's JWT; the state's row names the user it was issued to, and a caller
 * who is not that user is refused before anything is exchanged or stored. Without this binding,
 * a victim tricked into opening an attacker's authorize URL would link the victim's broker
 * account to the attacker's user.
 *
 * Order of the callback, so that nothing is ever half done: (1) the state is verified (its row,
 * its signature, its user) and found unconsumed; (2) it is spent (`consumed_at is null` in the
 * update, so two racing callbacks cannot both win) before the code goes to the broker: a state
 * buys one exchange attempt with the app's client secret whatever its outcome (issue 25, finding
 * 2: 200 guessed codes on one state were 200 exchanges); (3) the code is exchanged, outside any
 * transaction (a transaction may be re-run; a code may be exchanged once); (4) ONE transaction
 * writes the connection and its tokens. A failed exchange stops at (3) and writes nothing but
 * the spent state (the user starts again); a replay loses at (1) or (2). A user holds at most
 * `maxLiveStates` live states: a new one evicts the oldest.
 *
 * @example
 * ```ts
 * import type { Platform } from "../../shared/platform/platform.ts";
 * import { BrokerOAuth, type BrokerOAuthConfig } from "./broker_oauth.ts";
 *
 * declare const platform: Platform;
 * declare const config: BrokerOAuthConfig; // the BROKER_OAUTH_* group and BROKER_TOKEN_KEY
 * const oauth = await BrokerOAuth.create({
 *   db: platform.db,
 *   config,
 *   stateTtlSeconds: 600,
 *   maxLiveStates: 5,
 *   timeoutMs: 10_000,
 *   breaker: platform.breakers.get("broker-oauth"),
 *   now: platform.now,
 * });
 * const userId = crypto.randomUUID();
 * const url = await oauth.authorizeUrl(userId); // where the browser goes
 * // On the redirect back, with its query parameters:
 * const outcome = await oauth.complete({ code: "the-code", state: "the-state" }, userId);
 * outcome; // { ok: true, userId } | { ok: false, reason }
 * ```
 */
import * as z from "../../shared/zod.ts";
import type { Breaker } from "../../shared/resilience/circuit_breaker.ts";
import type { Database } from "../../shared/db/db.ts";
import { ServiceUnavailable, UpstreamUnavailable } from "../../shared/errors.ts";
import { fetchWithDeadline } from "../../shared/resilience/http_client.ts";
import { OAuthStateSigner } from "./oauth_state.ts";
import { encryptToken, importTokenKey, tokenContext } from "./token_crypto.ts";

/** The broker these connections are with (the suite's broker is Alpaca-compatible). */
export const BROKER = "alpaca";
/** Scopes asked for: Alpaca's account read/write and trading. */
const SCOPE = "account:write trading";

export interface BrokerOAuthConfig {
  BROKER_OAUTH_CLIENT_ID: string;
  BROKER_OAUTH_CLIENT_SECRET: string;
  BROKER_OAUTH_AUTHORIZE_URL: string;
  BROKER_OAUTH_TOKEN_URL: string;
  BROKER_OAUTH_REDIRECT_URL: string;
  BROKER_TOKEN_KEY: string;
}

export interface BrokerOAuthOptions {
  db: Database;
  config: BrokerOAuthConfig;
  stateTtlSeconds: number;
  /** Live (unspent, unexpired) states a user may hold; a new one evicts the oldest. */
  maxLiveStates: number;
  timeoutMs: number;
  breaker: Breaker;
  fetch?: typeof fetch;
  now: () => number;
}

/** Why a callback did not connect (the broker being unavailable is thrown instead: 503). */
export type FailureReason =
  /** Not a state of ours, forged, tampered with, or already used. */
  | "invalid_state"
  | "expired_state"
  /** A genuine state, issued to another user than the caller. */
  | "wrong_user"
  /** The broker refused the code (unknown, used, expired, or issued for another redirect). */
  | "exchange_refused";

export type CallbackOutcome = { ok: true; userId: string } | { ok: false; reason: FailureReason };

/** The token endpoint's answer (RFC 6749 §5.1); Alpaca omits refresh_token and expires_in. */
const TokenResponse = z.object({
  access_token: z.string().min(1).max(4096),
  token_type: z.string().min(1).max(40),
  scope: z.string().max(1000).optional(),
  refresh_token: z.string().min(1).max(4096).optional(),
  expires_in: z.number().int().positive().optional(),
});
type Tokens = z.infer<typeof TokenResponse>;

/** The broker refused the code (4xx): the user's flow failed, the broker is fine. */
class ExchangeRefused extends Error {
  constructor(readonly status: number) {
    super(`The broker refused the authorization code (HTTP ${status})`);
    this.name = "ExchangeRefused";
  }
}

/**
 * The broker's token endpoint answered 429: it is limiting this app, which says nothing about
 * its health, so the shared breaker does not count it (one user's retries would open it for
 * everyone); the caller gets 503 with the broker's Retry-After.
 */
class ExchangeThrottled extends ServiceUnavailable {
  constructor(retryAfterMs: number) {
    super(
      "BROKER_OAUTH_THROTTLED",
      "The broker is limiting connection attempts; start again shortly.",
      retryAfterMs,
    );
  }
}

export class BrokerOAuth {
  readonly #o: BrokerOAuthOptions;
  readonly #signer: OAuthStateSigner;
  readonly #key: CryptoKey;

  private constructor(o: BrokerOAuthOptions, signer: OAuthStateSigner, key: CryptoKey) {
    this.#o = o;
    this.#signer = signer;
    this.#key = key;
  }

  static async create(opts: BrokerOAuthOptions): Promise<BrokerOAuth> {
    const o = { ...opts };
    return new BrokerOAuth(
      o,
      await OAuthStateSigner.create(o.config.BROKER_TOKEN_KEY),
      await importTokenKey(o.config.BROKER_TOKEN_KEY),
    );
  }

  /** Issues and stores a state for `userId`; returns the broker's authorize URL carrying it. */
  async authorizeUrl(userId: string): Promise<string> {
    const c = this.#o.config;
    const { state, nonce, expiresAt } = await this.#signer.issue(
      userId,
      this.#o.now(),
      this.#o.stateTtlSeconds,
    );
    await this.#o.db.transaction(async (tx) => {
      // The user's own dead states go as new ones come: the table stays bounded per user.
      // So do the oldest live ones past the cap (one statement, as before: no extra round trip).
      await tx`delete from internal.oauth_states
        where user_id = ${userId} and (expires_at < now() or consumed_at is not null
          or nonce in (select nonce from internal.oauth_states
            where user_id = ${userId} and consumed_at is null and expires_at >= now()
            order by expires_at desc, nonce offset ${this.#o.maxLiveStates - 1}))`;
      await tx`insert into internal.oauth_states (nonce, user_id, broker, expires_at)
        values (${nonce}, ${userId}, ${BROKER}, to_timestamp(${expiresAt}))`;
    });
    const url = new URL(c.BROKER_OAUTH_AUTHORIZE_URL);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("client_id", c.BROKER_OAUTH_CLIENT_ID);
    url.searchParams.set("redirect_uri", c.BROKER_OAUTH_REDIRECT_URL);
    url.searchParams.set("scope", SCOPE);
    url.searchParams.set("state", state);
    return url.toString();
  }

  /**
   * Completes a callback for `callerId`, the verified user of the request, who must be the user
   * the state was issued to. Throws DatabaseUnavailable when the database is down, and
   * UpstreamUnavailable or CircuitOpen (503, nothing stored, the state still usable) when the
   * broker cannot be reached.
   */
  async complete(
    params: { code: string; state: string },
    callerId: string,
  ): Promise<CallbackOutcome> {
    const parsed = this.#signer.parse(params.state);
    if (!parsed) return { ok: false, reason: "invalid_state" };
    const nowSeconds = this.#o.now() / 1000;

    // (1) The state must be ours, signed for its row's user, unconsumed and unexpired.
    const [row] = await this.#o.db.query((sql) =>
      sql<{ user_id: string; expires_at: number; consumed: boolean; live: boolean }[]>`
        select user_id::text, extract(epoch from expires_at)::bigint as expires_at,
          consumed_at is not null as consumed, expires_at > now() as live
        from internal.oauth_states where nonce = ${parsed.nonce}`
    );
    if (!row || Number(row.expires_at) !== parsed.expiresAt) {
      return { ok: false, reason: "invalid_state" };
    }
    if (!(await this.#signer.verify(parsed, row.user_id))) {
      return { ok: false, reason: "invalid_state" };
    }
    if (callerId.toLowerCase() !== row.user_id.toLowerCase()) {
      return { ok: false, reason: "wrong_user" };
    }
    if (row.consumed) return { ok: false, reason: "invalid_state" };
    if (!row.live || parsed.expiresAt <= nowSeconds) return { ok: false, reason: "expired_state" };

    // (2) The state is spent before its one exchange attempt.
    const spent = await this.#o.db.query((sql) =>
      sql`update internal.oauth_states set consumed_at = now()
        where nonce = ${parsed.nonce} and user_id = ${row.user_id}
          and consumed_at is null and expires_at > now()
        returning 1`
    );
    if (spent.length !== 1) return { ok: false, reason: "invalid_state" };

    // (3) The exchange, outside any transaction.
    let tokens: Tokens;
    try {
      tokens = await this.#o.breaker.run(() => this.#exchange(params.code));
    } catch (err) {
      if (err instanceof ExchangeRefused) return { ok: false, reason: "exchange_refused" };
      throw err;
    }

    // (4) Store the connection, all of it or nothing.
    const userId = row.user_id;
    const access = await encryptToken(
      this.#key,
      tokens.access_token,
      tokenContext(userId, BROKER, "access"),
    );
    const refresh = tokens.refresh_token
      ? await encryptToken(this.#key, tokens.refresh_token, tokenContext(userId, BROKER, "refresh"))
      : null;
    await this.#o.db.transaction(async (tx) => {
      await tx`insert into public.broker_connections (user_id, broker, status, connected_at)
          values (${userId}, ${BROKER}, 'connected', now())
          on conflict (user_id, broker) do update
            set status = 'connected', connected_at = excluded.connected_at`;
      await tx`insert into internal.broker_tokens
            (user_id, broker, access_token, refresh_token, token_type, scope, expires_at, updated_at)
          values (${userId}, ${BROKER}, ${access}, ${refresh}, ${tokens.token_type},
            ${tokens.scope ?? null},
            ${tokens.expires_in ? new Date(this.#o.now() + tokens.expires_in * 1000) : null}, now())
          on conflict (user_id, broker) do update set access_token = excluded.access_token,
            refresh_token = excluded.refresh_token, token_type = excluded.token_type,
            scope = excluded.scope, expires_at = excluded.expires_at, updated_at = now()`;
    });
    return { ok: true, userId };
  }

  /** POSTs the code, form-encoded (RFC 6749 §4.1.3), within the deadline. */
  async #exchange(code: string): Promise<Tokens> {
    const c = this.#o.config;
    const body = new URLSearchParams({
      grant_type: "authorization_code",
      code,
      client_id: c.BROKER_OAUTH_CLIENT_ID,
      client_secret: c.BROKER_OAUTH_CLIENT_SECRET,
      redirect_uri: c.BROKER_OAUTH_REDIRECT_URL,
    });
    let result: { status: number; json: unknown; retryAfterMs: number };
    try {
      result = await fetchWithDeadline(
        c.BROKER_OAUTH_TOKEN_URL,
        {
          method: "POST",
          headers: {
            "content-type": "application/x-www-form-urlencoded",
            accept: "application/json",
          },
          body,
        },
        { timeoutMs: this.#o.timeoutMs, upstream: "broker OAuth", fetch: this.#o.fetch },
        async (res) => ({
          status: res.status,
          json: await res.json().catch(() => undefined),
          retryAfterMs: retryAfterMs(res.headers.get("retry-after")),
        }),
      );
    } catch (err) {
      throw new UpstreamUnavailable("broker OAuth", "unreachable or timed out", 1000, err);
    }
    if (result.status === 429) throw new ExchangeThrottled(result.retryAfterMs);
    if (result.status >= 400 && result.status < 500) throw new ExchangeRefused(result.status);
    if (result.status !== 200) {
      throw new UpstreamUnavailable("broker OAuth", `HTTP ${result.status}`);
    }
    const parsed = TokenResponse.safeParse(result.json);
    if (!parsed.success) throw new UpstreamUnavailable("broker OAuth", "unusable answer");
    return parsed.data;
  }

  /** Whether an error says nothing about the broker's health (for the breaker). */
  static isHealthy(err: unknown): boolean {
    return err instanceof ExchangeRefused || err instanceof ExchangeThrottled;
  }
}

/** A Retry-After in seconds as milliseconds, between 1 s and a minute (1 s when absent). */
function retryAfterMs(header: string | null): number {
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 60) * 1000 : 1000;
}
