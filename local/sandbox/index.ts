/**
 * The sandbox profile of `npm start`: simulated upstreams on loopback that speak the real
 * protocols (the same simulators the tests use), development secrets, and a banner that says
 * loudly that none of it is real.
 *
 * @example
 * ```ts
 * import { startSandbox } from "./index.ts";
 *
 * const sandbox = await startSandbox({ dataDir: ".data" });
 * const env = { ...Deno.env.toObject(), ...sandbox.env };
 * await sandbox.close();
 * ```
 */
import { OAUTH_VARIABLES } from "../../functions/auth/config.ts";
import { sign } from "hono/jwt";
import { startEmbedded } from "../embedded_db.ts";
import { loadSigningKey, type SigningKey } from "./signing_key.ts";
import { type BrokerSimulator, startBrokerSimulator } from "./broker.ts";
import { type BrokerOAuthSimulator, startBrokerOAuthSimulator } from "./broker_oauth.ts";
import { type DiscordSimulator, startDiscordSimulator } from "./discord.ts";
import { type MarketDataSimulator, startMarketDataSimulator } from "./market_data.ts";
import { type SlackWebhookSimulator, startSlackWebhookSimulator } from "./slack_webhook.ts";
import { startSupabaseAuthSimulator, type SupabaseAuthSimulator } from "./supabase_auth.ts";
import { startStripeSimulator, type StripeSimulator } from "./stripe.ts";

/** The contract's variables (and the other upstream credentials): any one set means production. */
export const CONTRACT_VARIABLES = [
  "FRONTEND_URL",
  "SUPABASE_URL",
  "SUPABASE_ANON_KEY",
  "SUPABASE_SERVICE_ROLE_KEY",
  "SUPABASE_JWT_SECRET",
  "JWT_SECRET",
  "SUPABASE_JWKS",
  "SUPABASE_SECRET_KEYS",
  "SUPABASE_DB_URL",
  "STRIPE_SECRET_KEY",
  "STRIPE_WEBHOOK_SECRET",
  "STRIPE_API_URL",
  "BROKER_API_URL",
  "BROKER_API_KEY_ID",
  "BROKER_API_SECRET_KEY",
  "MARKET_DATA_API_URL",
  "MARKET_DATA_API_KEY_ID",
  "MARKET_DATA_API_SECRET_KEY",
  "DISCORD_WEBHOOK_URL",
  "ALERT_FALLBACK_WEBHOOK_URL",
  // Upstream credentials all the same: setting any of them means production, so a real OAuth
  // client is never mixed with simulated upstreams.
  ...OAUTH_VARIABLES,
];

/** Well-known development secrets: printed, fixed, and worthless outside the sandbox. */
export const SANDBOX_SECRETS = {
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_sandbox_not_a_real_key_0123" }),
  STRIPE_SECRET_KEY: "sk_test_sandbox_not_a_real_key",
  STRIPE_WEBHOOK_SECRET: "whsec_sandbox_not_a_real_secret",
  BROKER_API_KEY_ID: "sandbox-key-id",
  BROKER_API_SECRET_KEY: "sandbox-secret-key",
  MARKET_DATA_API_KEY_ID: "sandbox-key-id",
  MARKET_DATA_API_SECRET_KEY: "sandbox-secret-key",
  BROKER_TOKEN_KEY: "c2FuZGJveC10b2tlbi1rZXktMzItYnl0ZXMtbG9uZyE=",
};

function secretKeys(): Record<string, string> {
  return JSON.parse(SANDBOX_SECRETS.SUPABASE_SECRET_KEYS);
}

/** The sandbox's one user. */
export const SANDBOX_USER = {
  id: "00000000-0000-4000-8000-000000000001",
  email: "trader@sandbox.test",
  password: "sandbox-password",
};

export interface Sandbox {
  env: Record<string, string>;
  simulators: Simulators;
  /** The project's signing key (ES256): tokens for tests and the printed keys. */
  signingKey: SigningKey;
  /** The sandbox user's access token (24 h). */
  userToken: string;
  /** A shell line: `export SUPABASE_URL=… SUPABASE_ANON_KEY=… USER_JWT=… SERVICE_ROLE_KEY=…`. */
  exports(serverUrl: string): string;
  banner(serverUrl: string): string;
  close(): Promise<void>;
}

/** Signs a legacy HS256 token (`role`, `aud`, `exp`), for projects and tests with a JWT secret. */
export function signToken(secret: string, claims: Record<string, unknown>, ttlSeconds = 24 * 3600) {
  const now = Math.floor(Date.now() / 1000);
  return sign({ iat: now, exp: now + ttlSeconds, ...claims }, secret, "HS256");
}

export interface SandboxOptions {
  /** Where the embedded database lives (`<dataDir>/pglite`). */
  dataDir?: string;
  /** Use this database instead of the embedded one (tests, benchmarks). */
  databaseUrl?: string;
  /**
   * A legacy HS256 secret the functions also accept (tests sign their own tokens with it). The
   * sandbox itself signs ES256, as hosted Supabase does, and sets no such secret.
   */
  jwtSecret?: string;
  /** Where the sandbox keeps its signing key (default `dataDir`, or a new key per start). */
  keyDir?: string;
  /** Allowed origins; default the Vite dev server's. */
  frontendUrl?: string;
  /** The port the functions are served on (unused: the OAuth redirect is a frontend page). */
  port?: number;
  /** `SUPABASE_URL` (the local server's own URL, where it mounts Auth); default the simulator's. */
  supabaseUrl?: string;
  /** Where the Discord simulator prints each message it receives; default nowhere. */
  print?: (line: string) => void;
}

/** Handles on the simulators, for tests that steer them. */
export interface Simulators {
  broker: BrokerSimulator;
  auth: SupabaseAuthSimulator;
  oauth: BrokerOAuthSimulator;
  quotes: MarketDataSimulator;
  discord: DiscordSimulator;
  /** The alert fallback channel (a Slack-style incoming webhook). */
  fallback: SlackWebhookSimulator;
  /** Stripe: signs and delivers events to payment-webhook, and lists them (GET /v1/events). */
  stripe: StripeSimulator;
}

export async function startSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  const closers: (() => Promise<void>)[] = [];
  const longLived = 10 * 365 * 86400;
  const signingKey = await loadSigningKey(opts.keyDir ?? opts.dataDir);
  const env: Record<string, string> = {
    ...SANDBOX_SECRETS,
    FRONTEND_URL: opts.frontendUrl ?? "http://localhost:5173,http://127.0.0.1:5173",
    SUPABASE_JWKS: JSON.stringify(signingKey.jwks),
    SUPABASE_ANON_KEY: await signingKey.sign({ role: "anon", iss: "supabase" }, longLived),
    SUPABASE_SERVICE_ROLE_KEY: await signingKey.sign(
      { role: "service_role", iss: "supabase" },
      longLived,
    ),
  };
  if (opts.jwtSecret) env.SUPABASE_JWT_SECRET = opts.jwtSecret;
  if (opts.databaseUrl) {
    env.SUPABASE_DB_URL = opts.databaseUrl;
  } else {
    const embedded = await startEmbedded(`${opts.dataDir ?? ".data"}/pglite`);
    closers.push(embedded.close);
    env.SUPABASE_DB_URL = embedded.url;
  }
  // SANDBOX SIMULATORS: each starts on a free loopback port and sets its URL variables here.
  const oauthClient = { clientId: "sandbox-oauth-client", clientSecret: "sandbox-oauth-secret" };
  const simulators: Simulators = {
    broker: await startBrokerSimulator({
      keyId: SANDBOX_SECRETS.BROKER_API_KEY_ID,
      secretKey: SANDBOX_SECRETS.BROKER_API_SECRET_KEY,
      // The sandbox's broker moves orders on by itself: fills, expiries, cancels.
      autoStepMs: 250,
    }),
    auth: await startSupabaseAuthSimulator({
      signingKey,
      anonKey: env.SUPABASE_ANON_KEY,
      apiKeys: [env.SUPABASE_SERVICE_ROLE_KEY, ...Object.values(secretKeys())],
      users: [SANDBOX_USER],
      issuer: opts.supabaseUrl ? `${opts.supabaseUrl.replace(/\/*$/, "")}/auth/v1` : undefined,
    }),
    oauth: await startBrokerOAuthSimulator(oauthClient),
    quotes: await startMarketDataSimulator({
      keyId: SANDBOX_SECRETS.MARKET_DATA_API_KEY_ID,
      secretKey: SANDBOX_SECRETS.MARKET_DATA_API_SECRET_KEY,
    }),
    discord: await startDiscordSimulator({ print: opts.print }),
    fallback: await startSlackWebhookSimulator({ print: opts.print }),
    stripe: await startStripeSimulator({
      secretKey: SANDBOX_SECRETS.STRIPE_SECRET_KEY,
      webhookSecret: SANDBOX_SECRETS.STRIPE_WEBHOOK_SECRET,
      // The local server's own payment-webhook (its URL is known when it mounts Auth).
      webhookUrl: opts.supabaseUrl && `${opts.supabaseUrl}/functions/v1/payment-webhook`,
      print: opts.print,
    }),
  };
  for (const sim of Object.values(simulators)) closers.push(() => sim.close());
  Object.assign(env, {
    BROKER_API_URL: simulators.broker.url,
    // The local server serves this simulator at its own /auth/v1 and sets SUPABASE_URL to itself.
    SUPABASE_URL: opts.supabaseUrl ?? simulators.auth.url,
    BROKER_OAUTH_CLIENT_ID: oauthClient.clientId,
    BROKER_OAUTH_CLIENT_SECRET: oauthClient.clientSecret,
    BROKER_OAUTH_AUTHORIZE_URL: simulators.oauth.authorizeUrl,
    BROKER_OAUTH_TOKEN_URL: simulators.oauth.tokenUrl,
    // A page of the frontend (the first allowed origin): it posts {code, state} with the user's
    // JWT to POST auth/oauth/callback, so only the user who started the flow completes it.
    BROKER_OAUTH_REDIRECT_URL: `${env.FRONTEND_URL.split(",")[0].trim()}/broker/callback`,
    MARKET_DATA_API_URL: simulators.quotes.url,
    DISCORD_WEBHOOK_URL: simulators.discord.url,
    ALERT_FALLBACK_WEBHOOK_URL: simulators.fallback.url,
    STRIPE_API_URL: simulators.stripe.url,
  });

  const userToken = await signingKey.sign({
    iss: `${env.SUPABASE_URL}/auth/v1`,
    sub: SANDBOX_USER.id,
    email: SANDBOX_USER.email,
    role: "authenticated",
    aud: "authenticated",
  }, 24 * 3600);
  return {
    env,
    simulators,
    signingKey,
    userToken,
    exports: (serverUrl) =>
      `export SUPABASE_URL=${serverUrl} SUPABASE_ANON_KEY=${env.SUPABASE_ANON_KEY} USER_JWT=${userToken} SERVICE_ROLE_KEY=${env.SUPABASE_SERVICE_ROLE_KEY}`,
    banner: (serverUrl) =>
      [
        "",
        "==================================================================================",
        "  SANDBOX: every upstream below is a local SIMULATOR. No real orders, payments or",
        "  Discord messages. Set any variable of the contract (or add .env) for production.",
        "==================================================================================",
        `  Functions:          ${serverUrl}/functions/v1/<name>`,
        `  Simulators:         ${
          Object.entries(env).filter(([k]) => k.endsWith("_URL") && k !== "FRONTEND_URL").map((
            [k, v],
          ) => `${k}=${v}`).join("  ")
        }`,
        `  Allowed origins:    ${env.FRONTEND_URL}`,
        `  Sandbox user:       ${SANDBOX_USER.email} / ${SANDBOX_USER.password}`,
        `  User JWT (24 h):    ${userToken}`,
        `  Service-role JWT:   ${env.SUPABASE_SERVICE_ROLE_KEY}`,
        `  Secret key:         ${secretKeys().default}`,
        `  Signing key:        ES256, kid ${signingKey.kid} (JWKS at ${serverUrl}/auth/v1/.well-known/jwks.json)`,
        `  Stripe webhook secret: ${env.STRIPE_WEBHOOK_SECRET}`,
        "  Try:",
        `    curl -H "Authorization: Bearer $USER_JWT" -H "Idempotency-Key: first-order-1" \\`,
        `      -H "Content-Type: application/json" -d '{"symbol":"AAPL","side":"buy","type":"market","qty":1,"time_in_force":"day"}' \\`,
        `      ${serverUrl}/functions/v1/broker-order`,
        "  A lost Stripe webhook, caught up (docs/stripe-catch-up.md):",
        `    curl -X POST -d '{"user_id":"${SANDBOX_USER.id}","deliver":false}' ${simulators.stripe.url}/_sandbox/checkout`,
        `    curl -X POST -H "Authorization: Bearer $SERVICE_ROLE_KEY" ${serverUrl}/functions/v1/payment-webhook/catch-up`,
        "==================================================================================",
        "",
      ].join("\n"),
    async close() {
      for (const close of closers.reverse()) await close();
    },
  };
}
