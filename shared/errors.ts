/**
 * Typed errors for every failure mode the suite answers, and the one place that turns any
 * thrown value into the contract's JSON error body.
 *
 * @example
 * ```ts
 * import { PayloadTooLarge } from "./errors.ts";
 *
 * function checkSize(bytes: number): void {
 *   // → 413 {"error": {"code": "PAYLOAD_TOO_LARGE", "message": "...", "requestId": "..."}}
 *   if (bytes > 65536) throw new PayloadTooLarge(65536);
 * }
 * ```
 */

/** One issue of a validation error, as the contract shapes it. */
export interface Issue {
  path: string;
  message: string;
}

/** Base of every error that maps to an HTTP answer. `expose` says the message is safe to show. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  readonly issues?: Issue[];

  constructor(
    status: number,
    code: string,
    message: string,
    options: { headers?: Record<string, string>; issues?: Issue[]; cause?: unknown } = {},
  ) {
    // A refusal (4xx) is an answer, not a fault: nothing ever reads its stack, and capturing
    // one was a visible part of a 401's cost. A 5xx keeps its stack.
    // (Error's constructor cannot throw here, so the limit is always put back.)
    const limit = Error.stackTraceLimit;
    if (status < 500) Error.stackTraceLimit = 0;
    super(message, { cause: options.cause });
    Error.stackTraceLimit = limit;
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.headers = { ...options.headers };
    this.issues = options.issues;
  }
}

/** Seconds for a `Retry-After` header: whole, at least 1. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** 503 base: a dependency is unavailable and nothing was done. Always carries `Retry-After`. */
export class ServiceUnavailable extends HttpError {
  readonly retryAfterMs: number;
  constructor(code: string, message: string, retryAfterMs: number, cause?: unknown) {
    super(503, code, message, {
      headers: { "retry-after": String(retryAfterSeconds(retryAfterMs)) },
      cause,
    });
    this.retryAfterMs = retryAfterMs;
  }
}

/** The database cannot be reached (or is in its recovery gate). */
export class DatabaseUnavailable extends ServiceUnavailable {
  constructor(retryAfterMs: number, cause?: unknown) {
    super(
      "DB_UNAVAILABLE",
      "The database is unavailable; nothing was changed.",
      retryAfterMs,
      cause,
    );
  }
}

/**
 * The database answers but lacks a migration this function was built for (deployed, migrations
 * arrive by `supabase db push`; the function serves as soon as they do). Never an outage.
 */
export class SchemaOutdated extends ServiceUnavailable {
  readonly missing: string;
  constructor(missing: string, retryAfterMs: number, cause?: unknown) {
    super(
      "SCHEMA_OUTDATED",
      `The database schema is older than this function: migration ${missing} has not been applied.`,
      retryAfterMs,
      cause,
    );
    this.missing = missing;
  }
}

/**
 * The database is up but too busy: a transaction kept failing on transient errors past its
 * attempts, or no connection came free in time. Sheds load; does not close the recovery gate.
 */
export class DatabaseBusy extends ServiceUnavailable {
  constructor(reason: string, cause?: unknown) {
    super("DB_BUSY", `The database is busy (${reason}); nothing was changed.`, 1000, cause);
  }
}

/** A circuit breaker is open for an upstream. */
export class CircuitOpen extends ServiceUnavailable {
  constructor(upstream: string, retryAfterMs: number) {
    super("CIRCUIT_OPEN", `The ${upstream} is failing; calls are paused.`, retryAfterMs);
  }
}

/** An upstream failed, timed out, or answered unusably. */
export class UpstreamUnavailable extends ServiceUnavailable {
  constructor(upstream: string, reason: string, retryAfterMs = 1000, cause?: unknown) {
    super(
      "UPSTREAM_UNAVAILABLE",
      `The ${upstream} is unavailable (${reason}).`,
      retryAfterMs,
      cause,
    );
  }
}

/** A function could not boot (invalid configuration). */
export class BootError extends ServiceUnavailable {
  constructor(fn: string, problems: string[]) {
    super("BOOT_ERROR", `The ${fn} function could not start: ${problems.join("; ")}.`, 30_000);
  }
}

export class BadRequest extends HttpError {
  constructor(message: string, code = "BAD_REQUEST", issues?: Issue[]) {
    super(400, code, message, { issues });
  }
}

export class ValidationFailed extends BadRequest {
  constructor(issues: Issue[]) {
    super("The request is not valid.", "VALIDATION_FAILED", issues);
  }
}

export class Unauthorized extends HttpError {
  constructor(message = "Missing or invalid credentials.", code = "UNAUTHORIZED") {
    super(401, code, message, { headers: { "www-authenticate": "Bearer" } });
  }
}

export class Forbidden extends HttpError {
  constructor(message: string, code = "FORBIDDEN") {
    super(403, code, message);
  }
}

export class NotFound extends HttpError {
  constructor(message = "No such route.") {
    super(404, "NOT_FOUND", message);
  }
}

export class MethodNotAllowed extends HttpError {
  constructor(allowed: readonly string[]) {
    super(405, "METHOD_NOT_ALLOWED", `Use ${allowed.join(" or ")}.`, {
      headers: { allow: allowed.join(", ") },
    });
  }
}

export class Conflict extends HttpError {
  constructor(code: string, message: string, retryAfterSeconds?: number) {
    super(409, code, message, {
      headers: retryAfterSeconds ? { "retry-after": String(retryAfterSeconds) } : {},
    });
  }
}

export class PayloadTooLarge extends HttpError {
  constructor(limitBytes: number) {
    super(413, "PAYLOAD_TOO_LARGE", `The body is larger than ${limitBytes} bytes.`);
  }
}

/** The body did not fully arrive within the deadline; the connection is closed. */
export class BodyTimeout extends HttpError {
  constructor(timeoutMs: number) {
    super(408, "BODY_TIMEOUT", `The body did not arrive within ${timeoutMs} ms.`, {
      headers: { connection: "close" },
    });
  }
}

/** The client went away before its body arrived: nobody reads the answer; not our failure. */
export class BodyIncomplete extends HttpError {
  constructor(cause?: unknown) {
    super(400, "BODY_INCOMPLETE", "The connection closed before the body arrived.", {
      headers: { connection: "close" },
      cause,
    });
  }
}

export class UnsupportedMediaType extends HttpError {
  constructor(expected: string) {
    super(415, "UNSUPPORTED_MEDIA_TYPE", `The body must be ${expected}.`);
  }
}

export class Unprocessable extends HttpError {
  constructor(code: string, message: string) {
    super(422, code, message);
  }
}

export class TooManyRequests extends HttpError {
  constructor(retryAfterMs: number, headers: Record<string, string> = {}) {
    super(429, "RATE_LIMITED", "Too many requests; slow down.", {
      headers: { ...headers, "retry-after": String(retryAfterSeconds(retryAfterMs)) },
    });
  }
}

/** The contract's JSON error answer for any thrown value. Unknown errors never leak their message. */
export function errorParts(
  err: unknown,
  requestId: string,
): { status: number; headers: Record<string, string>; body: string } {
  const known = err instanceof HttpError
    ? err
    : new HttpError(500, "INTERNAL", "Something went wrong; the request id names it in our logs.");
  const error: Record<string, unknown> = { code: known.code, message: known.message, requestId };
  if (known.issues) error.issues = known.issues;
  return {
    status: known.status,
    headers: { ...known.headers, "content-type": "application/json; charset=utf-8" },
    body: JSON.stringify({ error }),
  };
}

/** The error answer as a Response (outside Hono). */
export function errorResponse(err: unknown, requestId: string): Response {
  const { status, headers, body } = errorParts(err, requestId);
  return new Response(body, { status, headers });
}
