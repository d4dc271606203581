/**
 * Every public route, as a table (one entry per operation), and the OpenAPI 3.1 document built
 * from it (`npm run openapi` writes it to docs/openapi.json: generate.ts). Request bodies and
 * parameters are the zod schemas the functions validate with, imported from their modules and
 * turned into JSON Schema by zod 4 (`z.toJSONSchema`); answers are responses.ts. What every
 * route shares (the error shape, `x-request-id`, the 503 of a dependency, the refusals of its
 * guards: credentials, origin, content type, body size and deadline, rate limit) is added from
 * the entry's flags, so adding a route is adding one entry.
 *
 * @example
 * ```ts
 * import { openApiDocument } from "./routes.ts";
 *
 * const doc = openApiDocument();
 * Object.keys(doc.paths); // ["/auth/login", …, "/tools/execute"]
 * ```
 */
import * as z from "zod";
import { CallbackBody } from "../../functions/auth/oauth_routes.ts";
import { LoginBody, RefreshBody } from "../../functions/auth/handlers.ts";
import { OrderRequest, pageQuery } from "../../functions/broker-order/order_schema.ts";
import { AlertBody } from "../../functions/discord-alert/alert_routes.ts";
import { Envelope } from "../../functions/payment-webhook/receive.ts";
import { backtestParams } from "../../functions/tools/backtest.ts";
import { GreeksParams } from "../../functions/tools/greeks.ts";
import { parseLimits } from "../../shared/limits.ts";
import * as R from "./responses.ts";

/** The defaults of every limit (the document describes an untuned deployment). */
const LIMITS = parseLimits({});

/** Who may call a route. */
type Caller =
  /** A user's access token (role `authenticated`). */
  | "user"
  /** A service caller: service-role JWT, the service-role key or an `sb_secret_` key. */
  | "service"
  /** Stripe, by the `Stripe-Signature` of the raw body. */
  | "stripe"
  /** Anyone, without credentials. */
  | "anyone"
  /** Anyone; a service caller's credentials show more. */
  | "anyoneOrService";

/** One answer of a route: its description, body (none, the error shape, or a schema), codes. */
interface Answer {
  description: string;
  body?: z.ZodType | "error" | z.ZodType[];
  /** The error codes of this status (error bodies). */
  codes?: string[];
  /** Header components this answer carries: required ones first, `?` marks optional. */
  headers?: string[];
}

/** One operation: the table's entry. */
export interface RouteSpec {
  /** The function (the first path segment under /functions/v1). */
  fn: string;
  method: "get" | "post" | "delete";
  /** The path inside the function: `/`, `/login`, `/{id}`. */
  path: string;
  summary: string;
  description?: string;
  caller: Caller;
  /** Browser-facing: strict CORS, `403 ORIGIN_NOT_ALLOWED` for another origin. */
  browser: boolean;
  /** Query string schema (a zod object the function validates with). */
  query?: z.ZodObject;
  /** Extra query parameters the function checks by hand (name → schema and description). */
  queryParams?: Record<string, { schema: z.ZodType; description: string; required?: boolean }>;
  /** Path parameters (name → schema). */
  pathParams?: Record<string, z.ZodType>;
  /** The JSON body (the schema the function validates with) and its component name. */
  body?: { schema: z.ZodType; name: string };
  /** The body must be `application/json` (415 otherwise). */
  jsonOnly?: boolean;
  /** Needs an `Idempotency-Key`; a replay carries `Idempotent-Replayed: true`. */
  idempotent?: boolean;
  /** Rate limited: RateLimit fields on its answers and `429`. */
  rateLimited?: boolean;
  /** The route's own answers; the shared ones are added (an entry here wins on its status). */
  answers: Record<number, Answer>;
}

/** The 503 codes any route can answer (its database, its boot, load shedding). */
const DEPENDENCY_CODES = [
  "DB_UNAVAILABLE",
  "DB_BUSY",
  "SCHEMA_OUTDATED",
  "BOOT_ERROR",
  "OVERLOADED",
];
const UPSTREAM_CODES = ["UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN"];

/** The tools of functions/tools/catalog.ts, each with the schema it validates `params` with. */
const TOOLS = [
  { name: "options.greeks", params: GreeksParams, result: R.GreeksResult },
  {
    name: "backtest.run",
    params: backtestParams(LIMITS.TOOLS_BACKTEST_MAX_WINDOW),
    result: R.BacktestResult,
  },
] as const;

/** `POST /tools/execute`'s body per tool: ExecuteRequest with each tool's own params schema. */
const ExecuteBody = z.union(
  TOOLS.map((t) => z.strictObject({ tool: z.literal(t.name), params: t.params })),
);

/** An order's id in a path: a UUID (anything else is 404, as an unknown id). */
const OrderId = z.string().uuid();

/** The route table. */
export const ROUTES: RouteSpec[] = [
  {
    fn: "payment-webhook",
    method: "post",
    path: "/",
    summary: "Receive a Stripe event (Stripe → us)",
    description: "Applies each event id exactly once. Configure it as a Stripe webhook endpoint.",
    caller: "stripe",
    browser: false,
    body: { schema: Envelope, name: "StripeEvent" },
    answers: {
      200: { description: "Applied, recorded as ignored, or a duplicate", body: R.Received },
      400: {
        description: "Missing, forged or stale signature, or an event without an id",
        body: "error",
        codes: ["INVALID_SIGNATURE", "MALFORMED_EVENT", "MALFORMED_JSON"],
      },
    },
  },
  {
    fn: "payment-webhook",
    method: "post",
    path: "/catch-up",
    summary: "Apply Stripe events whose webhook never arrived (the schedule)",
    description: "Reads GET /v1/events from a cursor kept in Postgres; bounded work per run.",
    caller: "service",
    browser: false,
    answers: {
      200: { description: "What the run did", body: R.CatchUpReport },
      502: {
        description: "Stripe refused the request (a wrong key); nothing changed",
        body: "error",
        codes: ["STRIPE_REFUSED"],
      },
      503: {
        description: "Stripe's API or the database is unavailable; nothing changed",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES],
      },
    },
  },
  {
    fn: "broker-order",
    method: "post",
    path: "/",
    summary: "Place an order, at most once per Idempotency-Key",
    caller: "user",
    browser: true,
    body: { schema: OrderRequest, name: "OrderRequest" },
    jsonOnly: true,
    idempotent: true,
    rateLimited: true,
    answers: {
      201: { description: "Placed at the broker", body: R.Order },
      202: {
        description: "Outcome unknown (pending_confirmation): retry with the same key",
        body: R.Order,
        headers: ["RetryAfter"],
      },
      400: {
        description: "Invalid body or Idempotency-Key",
        body: "error",
        codes: [
          "VALIDATION_FAILED",
          "MALFORMED_JSON",
          "IDEMPOTENCY_KEY_REQUIRED",
          "IDEMPOTENCY_KEY_INVALID",
        ],
      },
      409: {
        description: "The first request with this key is still running",
        body: "error",
        codes: ["IDEMPOTENCY_KEY_IN_USE"],
      },
      422: {
        description: "The broker rejected the order, or the key was used for another request",
        body: "error",
        codes: ["ORDER_REJECTED", "IDEMPOTENCY_KEY_REUSED"],
      },
      503: {
        description: "A dependency is unavailable; nothing was placed",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES],
      },
    },
  },
  {
    fn: "broker-order",
    method: "get",
    path: "/",
    summary: "The caller's orders, newest first",
    caller: "user",
    browser: true,
    query: pageQuery(LIMITS.ORDERS_PAGE_MAX),
    answers: {
      200: { description: "A page of orders", body: R.OrderPage },
      400: { description: "Invalid limit or cursor", body: "error", codes: ["VALIDATION_FAILED"] },
    },
  },
  {
    fn: "broker-order",
    method: "get",
    path: "/{id}",
    summary: "One of the caller's orders",
    caller: "user",
    browser: true,
    pathParams: { id: OrderId },
    answers: {
      200: { description: "The order", body: R.Order },
      404: {
        description: "An unknown id, or another user's order",
        body: "error",
        codes: ["NOT_FOUND"],
      },
    },
  },
  {
    fn: "broker-order",
    method: "delete",
    path: "/{id}",
    summary: "Cancel the caller's open order at the broker",
    description: "Repeating it is harmless. Counted under the same per-user limit as placing.",
    caller: "user",
    browser: true,
    pathParams: { id: OrderId },
    rateLimited: true,
    answers: {
      200: { description: "The order, pending_cancel or canceled", body: R.Order },
      404: {
        description: "An unknown id, or another user's order",
        body: "error",
        codes: ["NOT_FOUND"],
      },
      409: {
        description: "The order can no longer be canceled (filled, expired, …)",
        body: "error",
        codes: ["ORDER_NOT_CANCELABLE"],
      },
      503: {
        description: "The broker or the database is unavailable; nothing changed",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES],
      },
    },
  },
  {
    fn: "broker-order",
    method: "post",
    path: "/sync",
    summary: "Bring open orders up to date with the broker (the schedule)",
    caller: "service",
    browser: true,
    answers: {
      200: { description: "What the run did", body: R.SyncReport },
      503: {
        description: "The broker or the database is unavailable; nothing changed",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES],
      },
    },
  },
  {
    fn: "auth",
    method: "post",
    path: "/login",
    summary: "Sign in with email and password (Supabase Auth)",
    caller: "anyone",
    browser: true,
    body: { schema: LoginBody, name: "LoginRequest" },
    jsonOnly: true,
    rateLimited: true,
    answers: {
      200: { description: "The session", body: R.Session },
      400: {
        description: "Invalid body",
        body: "error",
        codes: ["VALIDATION_FAILED", "MALFORMED_JSON"],
      },
      401: {
        description: "Wrong email or password (the same answer for both)",
        body: "error",
        codes: ["INVALID_CREDENTIALS"],
      },
      503: { description: "A dependency is unavailable", body: "error", codes: DEP_AND_UPSTREAM() },
    },
  },
  {
    fn: "auth",
    method: "post",
    path: "/refresh",
    summary: "Trade a refresh token for a new session",
    caller: "anyone",
    browser: true,
    body: { schema: RefreshBody, name: "RefreshRequest" },
    jsonOnly: true,
    rateLimited: true,
    answers: {
      200: { description: "The new session", body: R.Session },
      400: {
        description: "Invalid body",
        body: "error",
        codes: ["VALIDATION_FAILED", "MALFORMED_JSON"],
      },
      401: {
        description: "The refresh token is invalid or used",
        body: "error",
        codes: ["INVALID_REFRESH_TOKEN"],
      },
      503: { description: "A dependency is unavailable", body: "error", codes: DEP_AND_UPSTREAM() },
    },
  },
  {
    fn: "auth",
    method: "post",
    path: "/logout",
    summary: "Revoke the caller's session",
    caller: "user",
    browser: true,
    rateLimited: true,
    answers: {
      200: { description: "Signed out (or already)", body: R.SignedOut },
      503: { description: "A dependency is unavailable", body: "error", codes: DEP_AND_UPSTREAM() },
    },
  },
  {
    fn: "auth",
    method: "get",
    path: "/oauth/start",
    summary: "Start connecting a broker account: the broker's authorize URL",
    description: "Limited per user and per client IP; a user's live states are capped.",
    caller: "user",
    browser: true,
    rateLimited: true,
    answers: {
      200: { description: "The URL to send the browser to", body: R.OAuthStart },
      501: {
        description: "Broker OAuth is not configured",
        body: "error",
        codes: ["OAUTH_NOT_CONFIGURED"],
      },
    },
  },
  {
    fn: "auth",
    method: "post",
    path: "/oauth/callback",
    summary: "Finish connecting: post the broker's code and state, as the same user",
    description: "Limited per user and per client IP; a state is spent by its first exchange.",
    caller: "user",
    browser: true,
    rateLimited: true,
    body: { schema: CallbackBody, name: "OAuthCallbackRequest" },
    jsonOnly: true,
    answers: {
      200: { description: "Connected", body: R.OAuthConnected },
      400: {
        description: "Invalid body, state or code",
        body: "error",
        codes: [
          "VALIDATION_FAILED",
          "MALFORMED_JSON",
          "OAUTH_STATE_INVALID",
          "OAUTH_STATE_EXPIRED",
          "OAUTH_CODE_REJECTED",
        ],
      },
      403: {
        description: "Another user started this flow, the role or the origin is not allowed",
        body: "error",
        codes: ["OAUTH_STATE_FORBIDDEN", "ROLE_NOT_ALLOWED", "ORIGIN_NOT_ALLOWED"],
      },
      501: {
        description: "Broker OAuth is not configured",
        body: "error",
        codes: ["OAUTH_NOT_CONFIGURED"],
      },
      503: {
        description: "A dependency is unavailable, or the broker is throttling token exchanges",
        body: "error",
        codes: [...DEP_AND_UPSTREAM(), "BROKER_OAUTH_THROTTLED"],
      },
    },
  },
  {
    fn: "market-data",
    method: "get",
    path: "/",
    summary: "Latest quotes",
    caller: "user",
    browser: true,
    queryParams: {
      symbols: {
        schema: z.string().regex(/^[A-Z][A-Z.]{0,9}(,[A-Z][A-Z.]{0,9})*$/),
        description: `1 to ${LIMITS.MARKET_DATA_MAX_SYMBOLS} symbols, comma-separated`,
        required: true,
      },
    },
    rateLimited: true,
    answers: {
      200: { description: "Quotes, cached or live", body: R.Quotes },
      400: {
        description: "Missing, invalid or too many symbols",
        body: "error",
        codes: ["INVALID_SYMBOLS", "TOO_MANY_SYMBOLS"],
      },
      503: {
        description: "The provider fails and no cached quote is young enough",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES, "UPSTREAM_RATE_LIMITED"],
      },
    },
  },
  {
    fn: "discord-alert",
    method: "post",
    path: "/",
    summary: "Queue an alert for the operators' Discord channel",
    caller: "service",
    browser: false,
    body: { schema: AlertBody, name: "AlertRequest" },
    jsonOnly: true,
    answers: {
      202: { description: "Stored; delivery started", body: R.AlertQueued },
      400: {
        description: "Invalid body",
        body: "error",
        codes: ["VALIDATION_FAILED", "MALFORMED_JSON"],
      },
    },
  },
  {
    fn: "discord-alert",
    method: "post",
    path: "/drain",
    summary: "Deliver what is queued (for the scheduler)",
    caller: "service",
    browser: false,
    answers: { 200: { description: "What the pass did", body: R.DrainReport } },
  },
  {
    fn: "tools",
    method: "get",
    path: "/",
    summary: "The tools and the JSON Schema of their parameters",
    caller: "user",
    browser: true,
    rateLimited: true,
    answers: { 200: { description: "The tools", body: R.ToolList } },
  },
  {
    fn: "tools",
    method: "post",
    path: "/execute",
    summary: "Run one tool",
    caller: "user",
    browser: true,
    body: { schema: ExecuteBody, name: "ExecuteRequest" },
    jsonOnly: true,
    rateLimited: true,
    answers: {
      200: {
        description: "The tool's result",
        body: TOOLS.map((t) => t.result),
      },
      400: {
        description: "Invalid body or parameters, or an expired option",
        body: "error",
        codes: ["VALIDATION_FAILED", "MALFORMED_JSON", "OPTION_EXPIRED", "OUT_OF_RANGE"],
      },
      404: { description: "No such tool", body: "error", codes: ["TOOL_NOT_FOUND"] },
      422: {
        description: "The backtest covers more bars than allowed (refused before any is read)",
        body: "error",
        codes: ["BACKTEST_TOO_LARGE"],
      },
      429: {
        description: "Rate limited, or the user's backtests already run at their limit",
        body: "error",
        codes: ["RATE_LIMITED", "BACKTESTS_BUSY"],
      },
      503: {
        description: "A dependency is unavailable; no partial result",
        body: "error",
        codes: [...DEPENDENCY_CODES, ...UPSTREAM_CODES, "UPSTREAM_RATE_LIMITED"],
      },
      504: {
        description: "The tool ran past its deadline",
        body: "error",
        codes: ["TOOL_TIMEOUT"],
      },
    },
  },
  {
    fn: "status",
    method: "get",
    path: "/",
    summary: "Health and fail-safe state",
    description: "A service caller's credentials add every dependency's state.",
    caller: "anyoneOrService",
    browser: false,
    answers: {
      200: { description: "The database answers", body: R.Status },
      503: {
        description: "Fail-safe: the database is unavailable or its schema is outdated " +
          "(a Status body), or the function could not boot or is overloaded (an error body)",
        body: [R.Status, R.ErrorBody],
        codes: ["BOOT_ERROR", "OVERLOADED"],
        headers: ["RetryAfter"],
      },
    },
  },
];

function DEP_AND_UPSTREAM(): string[] {
  return [...DEPENDENCY_CODES, ...UPSTREAM_CODES];
}

/** The shared answers a route gets from its flags. */
function sharedAnswers(r: RouteSpec): Record<number, Answer> {
  const out: Record<number, Answer> = {};
  const add = (status: number, description: string, codes: string[], headers?: string[]) => {
    const prev = out[status];
    out[status] = prev
      ? { ...prev, codes: [...prev.codes!, ...codes], description: prev.description }
      : { description, body: "error", codes, headers };
  };
  if (r.caller === "user" || r.caller === "service") {
    add(401, "Missing or invalid credentials", ["MISSING_TOKEN", "INVALID_TOKEN"]);
    add(403, "The credentials' role is not allowed", ["ROLE_NOT_ALLOWED"]);
  }
  if (r.caller === "user") {
    add(503, "A dependency is unavailable", ["AUTH_KEYS_UNAVAILABLE"]);
  }
  if (r.caller === "stripe") {
    add(400, "Missing, forged or stale signature", ["INVALID_SIGNATURE"]);
  }
  if (r.browser) add(403, "The origin is not allowed", ["ORIGIN_NOT_ALLOWED"]);
  if (r.body) {
    add(503, "The instance holds as many request bodies as it may; retry after Retry-After", [
      "BODY_BUDGET_EXHAUSTED",
    ]);
    add(400, "The body did not fully arrive", ["BODY_INCOMPLETE"]);
    add(408, "The body did not arrive within the deadline", ["BODY_TIMEOUT"]);
    add(413, "The body is too large", ["PAYLOAD_TOO_LARGE"]);
  }
  if (r.jsonOnly) add(415, "The body is not application/json", ["UNSUPPORTED_MEDIA_TYPE"]);
  if (r.rateLimited) add(429, "Rate limited: retry after Retry-After seconds", ["RATE_LIMITED"]);
  add(503, "A dependency is unavailable; nothing was done", DEPENDENCY_CODES);
  return out;
}

/** Statuses whose answers always carry `Retry-After`. */
const RETRY_AFTER = new Set([429, 503]);

/** The route's answers: its own merged over the shared ones (codes of both, deduplicated). */
function answersOf(r: RouteSpec): [number, Answer][] {
  const shared = sharedAnswers(r);
  const merged: Record<number, Answer> = { ...shared };
  for (const [status, own] of Object.entries(r.answers)) {
    const base = shared[Number(status)];
    merged[Number(status)] = {
      ...own,
      codes: own.codes || base?.codes
        ? [...new Set([...(own.codes ?? []), ...(base?.codes ?? [])])]
        : undefined,
    };
  }
  return Object.entries(merged).map(([s, a]) => [Number(s), a] as [number, Answer])
    .sort(([a], [b]) => a - b);
}

/** JSON Schema of a request schema (what the caller sends) or a response schema. */
function jsonSchema(schema: z.ZodType, io: "input" | "output"): Record<string, unknown> {
  const out = z.toJSONSchema(schema, {
    io,
    unrepresentable: "any",
    target: "draft-2020-12",
    reused: "inline",
  }) as Record<string, unknown>;
  delete out.$schema;
  return tidy(out) as Record<string, unknown>;
}

/**
 * Removes what says nothing: the `{}` a class-typed union member becomes (broker-order's
 * decimals also accept the parser's exact-number wrapper, which a caller never sends).
 */
function tidy(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(tidy);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if ((k === "anyOf" || k === "oneOf") && Array.isArray(v)) {
      const kept = v.filter((s) => !(s && typeof s === "object" && Object.keys(s).length === 0));
      out[k] = tidy(kept);
    } else out[k] = tidy(v);
  }
  return out;
}

const NAMED_RESPONSES: [string, z.ZodType][] = [
  ["Error", R.ErrorBody],
  ["Order", R.Order],
  ["OrderPage", R.OrderPage],
  ["Session", R.Session],
  ["Quote", R.Quote],
  ["Status", R.Status],
  ["GreeksResult", R.GreeksResult],
  ["BacktestResult", R.BacktestResult],
];

/** The header components. */
const HEADERS = {
  XRequestId: {
    description: "The request's id (the caller's own x-request-id when well-formed); " +
      "every answer carries it, and an error body repeats it as requestId",
    required: true,
    schema: { type: "string", minLength: 1 },
  },
  RetryAfter: {
    description: "Seconds to wait before retrying (every 429 and 503)",
    required: true,
    schema: { type: "string", pattern: "^[1-9][0-9]*$" },
  },
  RateLimit: {
    description: 'IETF httpapi RateLimit fields, draft -11: `"<policy>";r=<remaining>;t=<seconds ' +
      "until reset>` (one item per policy that counted the request)",
    schema: {
      type: "string",
      pattern: '^"[a-z0-9-]+";r=\\d+;t=\\d+(, *"[a-z0-9-]+";r=\\d+;t=\\d+)*$',
    },
  },
  RateLimitPolicy: {
    description: 'IETF httpapi RateLimit-Policy, draft -11: `"<policy>";q=<quota>;w=<window ' +
      "seconds>`",
    schema: {
      type: "string",
      pattern: '^"[a-z0-9-]+";q=\\d+;w=\\d+(, *"[a-z0-9-]+";q=\\d+;w=\\d+)*$',
    },
  },
  IdempotentReplayed: {
    description: "`true` when the answer is the stored answer of an earlier request with the " +
      "same Idempotency-Key (nothing was done again)",
    schema: { type: "string", enum: ["true"] },
  },
};

/** A reference to a component. */
const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });

/** The response body schema: a named component when it is one, else inline. */
function bodySchema(schema: z.ZodType): Record<string, unknown> {
  const named = NAMED_RESPONSES.find(([, s]) => s === schema);
  return named ? ref("schemas", named[0]) : jsonSchema(schema, "output");
}

/** The OpenAPI 3.1 document of every route in ROUTES. */
export function openApiDocument(): {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
} {
  const paths: Record<string, Record<string, unknown>> = {};
  const requestSchemas: Record<string, unknown> = {};
  for (const r of ROUTES) {
    const path = `/${r.fn}${r.path === "/" ? "" : r.path}`;
    const parameters: unknown[] = [];
    for (const [name, schema] of Object.entries(r.pathParams ?? {})) {
      parameters.push({ name, in: "path", required: true, schema: jsonSchema(schema, "input") });
    }
    if (r.query) {
      const q = jsonSchema(r.query, "input") as {
        properties: Record<string, unknown>;
        required?: string[];
      };
      for (const [name, schema] of Object.entries(q.properties)) {
        const description = (schema as { description?: string }).description;
        parameters.push({
          name,
          in: "query",
          required: q.required?.includes(name) ?? false,
          ...(description ? { description } : {}),
          schema,
        });
      }
    }
    for (const [name, p] of Object.entries(r.queryParams ?? {})) {
      parameters.push({
        name,
        in: "query",
        required: p.required ?? false,
        description: p.description,
        schema: jsonSchema(p.schema, "input"),
      });
    }
    if (r.idempotent) parameters.push(ref("parameters", "IdempotencyKey"));
    parameters.push(ref("parameters", "XRequestIdIn"));

    const responses: Record<string, unknown> = {};
    for (const [status, a] of answersOf(r)) {
      const headers: Record<string, unknown> = { "x-request-id": ref("headers", "XRequestId") };
      if (RETRY_AFTER.has(status) || a.headers?.includes("RetryAfter")) {
        headers["Retry-After"] = ref("headers", "RetryAfter");
      }
      if (r.rateLimited) {
        headers["RateLimit"] = ref("headers", "RateLimit");
        headers["RateLimit-Policy"] = ref("headers", "RateLimitPolicy");
      }
      if (r.idempotent && status !== 401 && status !== 403) {
        headers["Idempotent-Replayed"] = ref("headers", "IdempotentReplayed");
      }
      const codes = a.codes?.length ? ` Codes: ${a.codes.map((c) => `\`${c}\``).join(", ")}.` : "";
      let schema: unknown;
      if (a.body === "error") schema = ref("schemas", "Error");
      else if (Array.isArray(a.body)) schema = { oneOf: a.body.map(bodySchema) };
      else if (a.body) schema = bodySchema(a.body);
      responses[String(status)] = {
        description: `${a.description}.${codes}`,
        headers,
        ...(schema ? { content: { "application/json": { schema } } } : {}),
        ...(a.codes?.length ? { "x-error-codes": a.codes } : {}),
      };
    }
    let requestBody: unknown;
    if (r.body) {
      requestSchemas[r.body.name] = jsonSchema(r.body.schema, "input");
      requestBody = {
        required: true,
        content: { "application/json": { schema: ref("schemas", r.body.name) } },
      };
    }
    paths[path] ??= {};
    paths[path][r.method] = {
      operationId: `${camel(r.fn)}${camel(r.method)}${camel(r.path.replace(/[{}]/g, ""))}`,
      tags: [r.fn],
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      security: SECURITY[r.caller],
      ...(parameters.length ? { parameters } : {}),
      ...(requestBody ? { requestBody } : {}),
      responses,
    };
  }

  const schemas: Record<string, unknown> = {};
  for (const [name, schema] of NAMED_RESPONSES) schemas[name] = jsonSchema(schema, "output");
  Object.assign(schemas, requestSchemas);

  return {
    openapi: "3.1.0",
    jsonSchemaDialect: "https://json-schema.org/draft/2020-12/schema",
    info: {
      title: "Trading edge functions",
      version: "1.0.0",
      description: "Supabase Edge Functions of the trading platform. Generated by " +
        "`npm run openapi` from the schemas the functions validate with; do not edit by hand.\n\n" +
        "Every answer is JSON and carries `x-request-id`. Errors are " +
        '`{"error": {"code", "message", "requestId", "issues"?}}`; `issues` lists each invalid ' +
        "field of a `400 VALIDATION_FAILED`. `429` and `503` always carry `Retry-After`. An " +
        "unknown path under a function is `404 NOT_FOUND`, a method it does not serve " +
        "`405 METHOD_NOT_ALLOWED`. Browser-facing functions (auth, broker-order, market-data, " +
        "tools) answer CORS preflights from the allowed origins (`FRONTEND_URL`) and refuse " +
        "other origins with `403 ORIGIN_NOT_ALLOWED`.",
    },
    servers: [
      {
        url: "https://{project}.supabase.co/functions/v1",
        description: "Hosted Supabase",
        variables: { project: { default: "your-project-ref" } },
      },
      { url: "http://127.0.0.1:54321/functions/v1", description: "npm start (local)" },
    ],
    tags: [...new Set(ROUTES.map((r) => r.fn))].map((name) => ({ name })),
    paths,
    components: {
      schemas,
      headers: HEADERS,
      parameters: {
        IdempotencyKey: {
          name: "Idempotency-Key",
          in: "header",
          required: true,
          description: "Unique per intended order; a retry sends the same key (kept 24 h)",
          schema: { type: "string", pattern: "^[A-Za-z0-9_:-]{8,255}$" },
        },
        XRequestIdIn: {
          name: "x-request-id",
          in: "header",
          required: false,
          description: "The caller's request id, kept when well-formed",
          schema: { type: "string" },
        },
      },
      securitySchemes: {
        userJwt: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "A user's Supabase access token (role authenticated), ES256/RS256 " +
            "verified against the project's JWKS",
        },
        serviceKey: {
          type: "http",
          scheme: "bearer",
          description: "A service caller: a service-role JWT, the exact " +
            "SUPABASE_SERVICE_ROLE_KEY, or one of SUPABASE_SECRET_KEYS (sb_secret_…)",
        },
        serviceApikey: {
          type: "apiKey",
          in: "header",
          name: "apikey",
          description: "The same service credentials in the apikey header",
        },
        stripeSignature: {
          type: "apiKey",
          in: "header",
          name: "Stripe-Signature",
          description: "Stripe's signature of the raw body (t=…,v1=…) with the endpoint's " +
            "signing secret",
        },
      },
    },
  };
}

const SECURITY: Record<Caller, unknown[]> = {
  user: [{ userJwt: [] }],
  service: [{ serviceKey: [] }, { serviceApikey: [] }],
  stripe: [{ stripeSignature: [] }],
  anyone: [],
  anyoneOrService: [{}, { serviceKey: [] }, { serviceApikey: [] }],
};

function camel(s: string): string {
  return s.split(/[^A-Za-z0-9]+/).filter(Boolean)
    .map((w) => w[0].toUpperCase() + w.slice(1)).join("");
}
