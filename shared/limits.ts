/**
 * Every tunable limit of the suite (time, size, count) in one place, with its default. Each is
 * read from the environment variable of the same name; docs/limits.md lists them all.
 *
 * @example
 * ```ts
 * import { parseLimits } from "./limits.ts";
 *
 * const limits = parseLimits(Deno.env.toObject());
 * limits.DB_QUERY_TIMEOUT_MS; // 1500 unless set
 * ```
 */
import * as z from "./zod.ts";
import { ConfigError } from "./env.ts";

// One schema for every positive whole number, each limit only its default around it: a hundred
// limits built at every function's boot (and parsed one by one below, so no object parser is
// compiled for a single use) cost a tenth of a cold start when each built its own chain.
const positiveInt = z.coerce.number().int().positive();
const withDefault = (byDefault: number) => positiveInt.default(byDefault);
/** A duration in milliseconds, and a count: the same schema, named for what the limit measures. */
const ms = withDefault;
const count = withDefault;

export const LimitsSchema = z.object({
  // Database (shared/db/db.ts)
  DB_POOL_MAX: count(10),
  DB_CONNECT_TIMEOUT_MS: ms(2_000),
  DB_QUERY_TIMEOUT_MS: ms(1_500),
  // 0 keeps idle connections (the default): postgres.js re-arms a Node timer after every query
  // to enforce it, which costs a measurable share of CPU under Deno; max_lifetime still recycles.
  DB_IDLE_TIMEOUT_SECONDS: z.coerce.number().int().min(0).default(0),
  DB_MAX_ATTEMPTS: count(5),
  DB_RETRY_BASE_MS: ms(10),
  DB_RETRY_MAX_MS: ms(500),
  DB_PROBE_BASE_MS: ms(100),
  DB_PROBE_MAX_MS: ms(2_000),
  DB_MIGRATE_TIMEOUT_MS: ms(60_000),
  DB_QUEUE_TIMEOUT_MS: ms(1_000),
  // While the schema lacks the migration the code needs, it is re-checked this often (jittered).
  DB_SCHEMA_RECHECK_MS: ms(5_000),
  // HTTP in and out (shared/http/body_limit.ts, shared/resilience/http_client.ts, shared/http/cors.ts)
  BODY_LIMIT_BYTES: count(16 * 1024),
  MAX_IN_FLIGHT_REQUESTS: count(256),
  // A body must fully arrive within this time (else 408, connection closed), and is read before
  // the request counts as work (shared/http/body_deadline.ts); routes apply their own smaller limits.
  BODY_READ_TIMEOUT_MS: ms(10_000),
  BODY_READ_MAX_BYTES: count(1024 * 1024),
  // All request bodies one instance buffers at once (every function it runs): past it a body is
  // refused 503 BODY_BUDGET_EXHAUSTED with Retry-After; requests without a body are still served.
  BODY_BUFFER_BUDGET_BYTES: count(32 * 1024 * 1024),
  HTTP_TIMEOUT_MS: ms(10_000),
  CORS_MAX_AGE_SECONDS: count(600),
  // Token verification (shared/auth/jwt.ts): an unknown `kid` refetches the JWKS at most this often.
  JWKS_COOLDOWN_MS: ms(30_000),
  JWKS_TIMEOUT_MS: ms(5_000),
  // Verified tokens remembered per instance (a repeat request skips the signature check).
  JWT_CACHE_MAX: count(2_048),
  JWT_CACHE_MAX_AGE_MS: ms(5 * 60_000),
  // Circuit breakers (shared/resilience/circuit_breaker.ts)
  BREAKER_ERROR_PERCENT: count(50),
  BREAKER_VOLUME_THRESHOLD: count(5),
  BREAKER_WINDOW_MS: ms(10_000),
  BREAKER_RESET_MS: ms(10_000),
  // payment-webhook: Stripe's events are well under 1 MiB; 512 KiB leaves room for the largest.
  WEBHOOK_BODY_LIMIT_BYTES: count(512 * 1024),
  WEBHOOK_TOLERANCE_SECONDS: count(300),
  WEBHOOK_RETENTION_DAYS: count(30),
  // Stripe event ids older than the retention are purged at most this often per instance, in
  // batches small enough never to hold locks for long (functions/payment-webhook/event_retention.ts).
  WEBHOOK_PURGE_INTERVAL_SECONDS: count(3600),
  WEBHOOK_PURGE_BATCH_SIZE: count(500),
  // payment-webhook's catch-up (functions/payment-webhook/catch_up.ts): each call to Stripe's
  // API has this deadline; a run reads at most STRIPE_CATCHUP_MAX_EVENTS events (pages of 100),
  // so its work stays bounded; each scan starts STRIPE_CATCHUP_OVERLAP_SECONDS before what the
  // last one covered (an event Stripe listed late is still read); the first run looks back
  // STRIPE_CATCHUP_LOOKBACK_HOURS (Stripe lists 30 days: at most 720); a run that finds nothing
  // new writes its cursor only once it would move by STRIPE_CATCHUP_CHECKPOINT_SECONDS.
  STRIPE_TIMEOUT_MS: ms(5_000),
  STRIPE_CATCHUP_MAX_EVENTS: count(300),
  STRIPE_CATCHUP_OVERLAP_SECONDS: count(300),
  STRIPE_CATCHUP_LOOKBACK_HOURS: z.coerce.number().int().positive().max(720).default(72),
  STRIPE_CATCHUP_CHECKPOINT_SECONDS: count(3_600),
  // broker-order
  BROKER_TIMEOUT_MS: ms(10_000),
  ORDER_RATE_LIMIT: count(60),
  ORDER_RATE_WINDOW_SECONDS: count(60),
  IDEMPOTENCY_TTL_SECONDS: count(24 * 3600),
  IDEMPOTENCY_LOCK_SECONDS: count(30),
  // Expired idempotency keys are purged at most this often per instance, in small batches
  // (shared/http/idempotency.ts).
  IDEMPOTENCY_PURGE_INTERVAL_SECONDS: count(300),
  IDEMPOTENCY_PURGE_BATCH_SIZE: count(500),
  ORDERS_PAGE_MAX: count(100),
  // Rate-limit keys idle past their window are purged at most this often per limiter and
  // instance, in batches of this many (shared/http/rate_limit.ts).
  RATE_LIMIT_PURGE_INTERVAL_SECONDS: count(600),
  RATE_LIMIT_PURGE_BATCH_SIZE: count(1_000),
  // broker-order lifecycle (docs/order-lifecycle.md): the broker's request budget shared by every
  // instance (Alpaca allows 200 a minute per account) for the sync's reads and cancels; what one
  // sync run may reserve of it, how many open orders it looks at, the page size of
  // `GET /v2/orders?status=open` (Alpaca's maximum is 500), the page size of the fill feed
  // `GET /v2/account/activities/FILL` (Alpaca's maximum is 100), how far before the oldest open
  // order a feed without a usable cursor is read from (clock skew between us and the broker), and
  // how long a pending order must be absent at the broker before it is `not_placed`.
  BROKER_API_RATE_LIMIT: count(200),
  BROKER_API_RATE_WINDOW_SECONDS: count(60),
  ORDER_SYNC_BROKER_READS_MAX: count(50),
  ORDER_SYNC_MAX_ORDERS: count(5_000),
  ORDER_SYNC_PAGE_SIZE: z.coerce.number().int().min(1).max(500).default(500),
  ORDER_SYNC_FILLS_PAGE_SIZE: z.coerce.number().int().min(1).max(100).default(100),
  ORDER_SYNC_FILLS_SKEW_SECONDS: count(60),
  ORDER_ABSENT_AFTER_SECONDS: count(120),
  // auth
  AUTH_TIMEOUT_MS: ms(5_000),
  LOGIN_EMAIL_LIMIT: count(5),
  LOGIN_IP_LIMIT: count(20),
  LOGIN_WINDOW_SECONDS: count(60),
  OAUTH_STATE_TTL_SECONDS: count(600),
  // Broker OAuth (issue 25, finding 2): starts and callbacks per user and per client IP per
  // OAUTH_RATE_WINDOW_SECONDS (each callback costs an exchange with the app's client secret);
  // live states a user may hold at once (a new one evicts the oldest).
  OAUTH_START_USER_LIMIT: count(10),
  OAUTH_CALLBACK_USER_LIMIT: count(10),
  OAUTH_IP_LIMIT: count(60),
  OAUTH_RATE_WINDOW_SECONDS: count(60),
  OAUTH_LIVE_STATES_MAX: count(5),
  // Entries of X-Forwarded-For appended by proxies we trust; the client IP is this many from the right.
  LOGIN_TRUSTED_PROXY_HOPS: count(1),
  // auth: refresh and logout calls per client IP per LOGIN_WINDOW_SECONDS (each costs a call to
  // Supabase Auth, whose own per-IP limits see only the function's address). Refreshes are
  // roomier than logins: many users behind one NAT each refresh about once an hour.
  REFRESH_IP_LIMIT: count(60),
  LOGOUT_IP_LIMIT: count(30),
  // market-data (names fixed by the contract)
  MARKET_DATA_CACHE_TTL_SECONDS: count(300),
  MARKET_DATA_MAX_STALE_SECONDS: count(900),
  MARKET_DATA_TIMEOUT_MS: ms(5_000),
  MARKET_DATA_MAX_SYMBOLS: count(50),
  MARKET_DATA_RATE_LIMIT: count(120),
  MARKET_DATA_MEMORY_CACHE_ENTRIES: count(5_000),
  // discord-alert
  DISCORD_TIMEOUT_MS: ms(5_000),
  ALERT_DEDUP_WINDOW_SECONDS: count(300),
  ALERT_MAX_ATTEMPTS: count(8),
  ALERT_DRAIN_BUDGET_MS: ms(10_000),
  ALERT_DIRECT_COOLDOWN_SECONDS: count(300),
  // Alert bodies carry up to 16,000 characters of text (truncated to Discord's limits on send).
  ALERT_BODY_LIMIT_BYTES: count(64 * 1024),
  // An alert with a dedupKey waits this long before its first send so a burst becomes one
  // message (Prometheus Alertmanager's group_wait); alerts without a key go out at once.
  ALERT_GROUP_WAIT_MS: ms(2_000),
  // Backoff between delivery attempts (full jitter), after 5xx or timeouts.
  ALERT_RETRY_BASE_MS: ms(1_000),
  ALERT_RETRY_MAX_MS: ms(60_000),
  // A drainer's claim on an alert; a drainer that died releases it when this passes.
  ALERT_LEASE_MS: ms(30_000),
  // Sent alerts are kept this long (dead ones until an operator removes them).
  ALERT_RETENTION_DAYS: count(7),
  // Sent alerts past their retention and stale fallback cooldowns are purged at most this often
  // per drainer, in batches of this many (shared/alerts/alert_drainer.ts).
  ALERT_PURGE_INTERVAL_SECONDS: count(3600),
  ALERT_PURGE_BATCH_SIZE: count(500),
  // Alerts across instances (shared/alerts/discord_webhook_state.ts, shared/alerts/alert_fallback.ts): a
  // webhook Discord answered 401/403/404 is retried this rarely (one probe for the fleet) until
  // it works; the fallback channel (ALERT_FALLBACK_WEBHOOK_URL) hears when Discord delivery has
  // failed this long or the webhook is unusable, each kind at most once per cooldown.
  ALERT_WEBHOOK_PROBE_INTERVAL_SECONDS: count(300),
  ALERT_FALLBACK_AFTER_SECONDS: count(120),
  ALERT_FALLBACK_COOLDOWN_SECONDS: count(900),
  ALERT_FALLBACK_TIMEOUT_MS: ms(5_000),
  // tools (functions/tools): per-user calls a minute; each call's deadline and the size of its
  // result; Greeks below the minimum time to expiry are the limit at expiry; a backtest reads
  // at most TOOLS_BACKTEST_MAX_BARS bars, TOOLS_BACKTEST_PAGE_SIZE a page (Alpaca's largest is
  // 10,000), with moving averages of at most TOOLS_BACKTEST_MAX_WINDOW bars. A million bars cost
  // about 1.9 s of CPU here (mostly JSON parsing), so the default keeps a run near 1 s of the 2 s
  // hosted Supabase allows a request.
  TOOLS_RATE_LIMIT: count(60),
  TOOLS_DEADLINE_MS: ms(1_000),
  TOOLS_MAX_OUTPUT_BYTES: count(4_096),
  TOOLS_GREEKS_MIN_EXPIRY_SECONDS: count(60),
  TOOLS_BACKTEST_DEADLINE_MS: ms(30_000),
  TOOLS_BACKTEST_MAX_BARS: count(500_000),
  TOOLS_BACKTEST_PAGE_SIZE: z.coerce.number().int().min(1).max(10_000).default(10_000),
  TOOLS_BACKTEST_MAX_WINDOW: count(1_000),
  // Backtests per user (issue 25, finding 3): at most this many at once across instances, and
  // this many a minute (besides TOOLS_RATE_LIMIT); a range whose bars could exceed
  // TOOLS_BACKTEST_MAX_BARS is refused before a bar is read.
  TOOLS_BACKTEST_CONCURRENCY: count(2),
  TOOLS_BACKTEST_RATE_LIMIT: count(10),
  // Local server (local/serve.ts)
  SHUTDOWN_GRACE_MS: ms(10_000),
});

export type Limits = z.infer<typeof LimitsSchema>;

/** Parses the limits from an environment; throws a ConfigError naming every malformed one. */
export function parseLimits(env: Record<string, string | undefined>): Limits {
  const limits: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, schema] of Object.entries(LimitsSchema.shape)) {
    const value = env[key];
    const result = schema.safeParse(value === "" ? undefined : value);
    if (result.success) limits[key] = result.data;
    else problems.push(`${key} must be a whole number (positive unless documented)`);
  }
  if (problems.length) throw new ConfigError(problems);
  return limits as Limits;
}
