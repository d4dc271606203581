/**
 * Idempotency keys (IETF httpapi "The Idempotency-Key HTTP Header Field" draft) that hold across
 * every instance: each key is claimed in Postgres (`internal.idempotency_keys`) per scope, owner
 * and key, with a fingerprint of the request, its state and a 24 h lifetime.
 *
 * - No key: `400 IDEMPOTENCY_KEY_REQUIRED`; not 8–255 of `A-Z a-z 0-9 - _ :`:
 *   `400 IDEMPOTENCY_KEY_INVALID` (the draft's quoted sf-string form `"…"` is accepted too).
 * - Same key, different request (method, path or canonical JSON body): `422 IDEMPOTENCY_KEY_REUSED`.
 * - Same key while an attempt holds it: `409 IDEMPOTENCY_KEY_IN_USE` with `Retry-After`.
 * - Same key once completed: the stored status and body, with `Idempotent-Replayed: true`.
 *
 * An attempt holds its key for `lockSeconds` only: one that died (killed instance, lost
 * connection) leaves its claim behind, and the next retry after the lock takes over with
 * `resuming: true`, to resume from where the first stopped rather than start again. A handler that
 * cannot finish yet (an order the broker has not confirmed) `release`s the key, so the next retry
 * takes over at once, resuming; a pending answer is never stored as the final one.
 *
 * The handler completes the key itself, in the SAME transaction as its own writes
 * (`claim.complete(tx, status, body)`), so the effect and the stored answer commit together or not
 * at all. Completion and release are conditional on the attempt's lease: an attempt that was taken
 * over cannot overwrite its successor's work (`complete` then throws `409 IDEMPOTENCY_KEY_IN_USE`
 * and its transaction rolls back). A handler that throws, or returns without completing, has its
 * key released for the next retry.
 *
 * Validate the request before this middleware: as with Stripe, a request that fails validation
 * never touches a key ("no idempotent result is saved if incoming parameters failed validation").
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Database } from "../db/db.ts";
 * import { idempotency, idempotencyClaim } from "./idempotency.ts";
 *
 * declare const db: Database;
 * const app = new Hono();
 * app.post(
 *   "/",
 *   idempotency({ db, scope: "orders", owner: () => "user-1", ttlSeconds: 86400, lockSeconds: 30 }),
 *   async (c) => {
 *     const claim = idempotencyClaim(c);
 *     return await db.transaction(async (tx) => {
 *       await tx`insert into public.effects default values`;
 *       await claim.complete(tx, 201, { ok: true });
 *       return c.json({ ok: true }, 201);
 *     });
 *   },
 * );
 * ```
 */
import { housekeeping } from "../resilience/housekeeping.ts";
import type { Logger } from "../logger.ts";
import type { Context, MiddlewareHandler } from "hono";
import type { Database, Tx } from "../db/db.ts";
import { BadRequest, Conflict, retryAfterSeconds, Unprocessable } from "../errors.ts";
import type { RateLimitVariables } from "./rate_limit.ts";
import { sha256 } from "../sha256.ts";
import { literal } from "../db/sql_literal.ts";

/** The contract's key syntax: 8–255 characters of `A-Z a-z 0-9 - _ :`. */
const KEY_PATTERN = /^[A-Za-z0-9_:-]{8,255}$/;

/** Parses the `Idempotency-Key` field; throws `400` when it is missing or malformed. */
export function parseIdempotencyKey(value: string | undefined | null): string {
  if (value === undefined || value === null || value.trim() === "") {
    throw new BadRequest(
      "Send an Idempotency-Key header (8-255 characters of A-Z a-z 0-9 - _ :).",
      "IDEMPOTENCY_KEY_REQUIRED",
    );
  }
  let key = value.trim();
  // The draft defines the field as a Structured Field String, i.e. quoted: accept both forms.
  if (key.length >= 2 && key.startsWith('"') && key.endsWith('"')) key = key.slice(1, -1);
  if (!KEY_PATTERN.test(key)) {
    throw new BadRequest(
      `The Idempotency-Key must be 8-255 characters of A-Z a-z 0-9 - _ : (got ${
        Math.min(value.length, 999)
      } characters).`,
      "IDEMPOTENCY_KEY_INVALID",
    );
  }
  return key;
}

/**
 * A JSON number as written, for the fingerprint: two literals that round to the same double
 * (`99999999.999999999` and `99999999.999999998`) are two requests (issue 25, finding 5).
 */
class NumberLiteral {
  constructor(readonly source: string) {}

  /**
   * The double's JSON text when it is exactly the literal's value (every number a validator
   * keeps, so stored fingerprints stay as they were), else the literal's exact value in
   * scientific form (`9.9999999999999999e7`), which no double's JSON text can equal.
   */
  toCanonical(): string {
    const double = JSON.stringify(Number(this.source));
    const exact = exactDecimal(this.source);
    if (exact === undefined || exact === exactDecimal(double)) return double;
    return exact;
  }
}

/** The exact value of a JSON number literal as `[-]d.ddde<exp>` (no leading or trailing zero digit). */
function exactDecimal(source: string): string | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(source);
  if (!m) return undefined;
  const [, sign, int, frac = "", exp = "0"] = m;
  const all = int + frac;
  const lead = all.search(/[1-9]/);
  if (lead === -1) return "0";
  const digits = all.slice(lead).replace(/0+$/, "");
  // value = 0.<all> × 10^(int.length + exp); shifted to d.ddd × 10^e
  const e = BigInt(exp) + BigInt(int.length) - BigInt(lead) - 1n;
  return `${sign}${digits[0]}${digits.length > 1 ? "." + digits.slice(1) : ""}e${e}`;
}

/** JSON with object keys sorted at every level, so `{"a":1,"b":2}` and `{"b":2,"a":1}` match. */
export function canonicalJson(value: unknown): string {
  if (value instanceof NumberLiteral) return value.toCanonical();
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value as Record<string, unknown>).sort().map((k) =>
      `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`
    );
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The request's fingerprint: sha-256 (hex) of method, path and canonical body (numbers exact). */
export async function requestFingerprint(
  method: string,
  path: string,
  body: string,
): Promise<string> {
  let canonical = body;
  if (body.trim() !== "") {
    try {
      // Numbers as written, not as the doubles they round to (ES2025 JSON.parse source access).
      canonical = canonicalJson(
        JSON.parse(
          body,
          (_key, value, context?: { source?: string }) =>
            typeof value === "number" && context?.source !== undefined
              ? new NumberLiteral(context.source)
              : value,
        ),
      );
    } catch { /* not JSON: the exact bytes are the request */ }
  }
  return await sha256(`${method.toUpperCase()}\n${path}\n${canonical}`, "hex");
}

/** `complete` or `release` found the key held by a later attempt (this one was taken over). */
export class IdempotencyLeaseLost extends Conflict {
  constructor() {
    super(
      "IDEMPOTENCY_KEY_IN_USE",
      "Another request with this Idempotency-Key took over; retry to get its answer.",
      1,
    );
  }
}

/** One attempt's hold on a key, as the handler sees it. */
export interface IdempotencyClaim {
  /** The key as sent (unquoted). */
  readonly key: string;
  /** Names this lifetime of the key: the same for every attempt until it expires. */
  readonly keyId: string;
  /** 1 for the first attempt, then 2, 3… for each take-over. */
  readonly attempt: number;
  /** An earlier attempt held this key and did not finish: resume from where it stopped. */
  readonly resuming: boolean;
  /**
   * Marks the key completed with the answer to replay, inside the caller's transaction `tx`.
   * Throws IdempotencyLeaseLost (409) when another attempt took over; `tx` then rolls back.
   */
  complete(tx: Tx, status: number, body: unknown): Promise<void>;
  /**
   * Ends this attempt without a final answer: the next request with the key takes over at once,
   * resuming. Inside `tx` when given (commits with the caller's writes), else on its own.
   */
  release(tx?: Tx): Promise<void>;
  /**
   * Settles the key in the caller's own statement, for a handler whose write and completion are
   * one call (one round trip): `run` gets where the key is (`scope`, `owner`, `key`, `lease`) and
   * must complete or release it conditionally on the lease, throwing IdempotencyLeaseLost when
   * the lease is gone (`leaseLost` tells that database error apart). Marks the key settled once
   * `run` resolves.
   */
  settleWith<T>(run: (where: KeyLocation) => Promise<T>): Promise<T>;
}

/** Where one attempt's key is, for a statement that settles it itself (`settleWith`). */
export interface KeyLocation {
  scope: string;
  owner: string;
  key: string;
  lease: string;
}

/**
 * SQLSTATE a settling statement raises when the lease is gone (another attempt took over), as
 * `internal.order_record` does; `leaseLost(err)` recognises it.
 */
export const LEASE_LOST_SQLSTATE = "IK409";

/** Whether a database error says the attempt's lease was lost (see LEASE_LOST_SQLSTATE). */
export function leaseLost(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === LEASE_LOST_SQLSTATE;
}

/** The variable `idempotency()` sets: handlers read `c.var.idempotency`. */
export interface IdempotencyVariables {
  idempotency: IdempotencyClaim;
}

export interface IdempotencyOptions {
  db: Database;
  /** Names the route's family of keys (the function): scopes never share keys. */
  scope: string;
  /** Whose key it is (the user id): keys are per owner. */
  owner: (c: Context) => string;
  /** How long a key is remembered from its first use (IDEMPOTENCY_TTL_SECONDS, 24 h). */
  ttlSeconds: number;
  /** How long one attempt holds a key before a retry may take over (IDEMPOTENCY_LOCK_SECONDS). */
  lockSeconds: number;
  /**
   * Purging expired keys: called after each request (`expiredKeysPurge` makes one on the
   * housekeeping schedule). Omit to purge elsewhere.
   */
  purge?: () => void;
}

interface ClaimRow {
  outcome: "claimed" | "resumed" | "replay" | "mismatch" | "in_use" | "limited";
  allowed?: boolean;
  remaining?: number;
  reset_ms?: number;
  key_id: string | null;
  attempt: number | null;
  response_status: number | null;
  response_body: string | null;
  retry_after_ms: number | null;
}

const VARIABLE = "idempotency" as const;

/** The claim the middleware put on the context; throws if the route has no `idempotency()`. */
export function idempotencyClaim(c: Context): IdempotencyClaim {
  const claim = c.get(VARIABLE as never) as IdempotencyClaim | undefined;
  if (!claim) throw new Error("idempotencyClaim() needs the idempotency() middleware first");
  return claim;
}

/**
 * The middleware (see the module's summary). Throws at start-up on a bad option; per request it
 * throws the 400/409/422 errors above, or DatabaseUnavailable (503) when the database is down.
 */
export function idempotency(options: IdempotencyOptions): MiddlewareHandler {
  const opts = { ...options };
  if (!/^[a-z0-9_-]+$/.test(opts.scope)) throw new Error(`Scope is not a token: ${opts.scope}`);
  for (const name of ["ttlSeconds", "lockSeconds"] as const) {
    if (!(Number.isInteger(opts[name]) && opts[name] > 0)) {
      throw new Error(`Idempotency ${name} must be a positive integer, got ${opts[name]}`);
    }
  }
  if (opts.lockSeconds >= opts.ttlSeconds) {
    throw new Error("Idempotency lockSeconds must be shorter than ttlSeconds");
  }
  const { db, scope } = opts;
  const lockMs = opts.lockSeconds * 1000;
  const maybePurge = opts.purge ?? (() => {});

  return async function idempotencyGuard(c, next) {
    const key = parseIdempotencyKey(c.req.header("idempotency-key"));
    const owner = opts.owner(c);
    const fingerprint = await requestFingerprint(c.req.method, c.req.path, await c.req.text());
    const lease = crypto.randomUUID();
    const claimArgs = [scope, owner, key, fingerprint, lease].map(literal).join(", ") +
      `, ${lockMs}, ${opts.ttlSeconds}`;
    // A rate-limit hit left by deferRateLimit() is counted in the same statement.
    const hit: RateLimitVariables["rateLimitHit"] = c.var.rateLimitHit;
    const counting = hit && !hit.counted ? hit : undefined;
    const [row] = await db.query((sql) =>
      sql.unsafe<ClaimRow[]>(
        counting
          ? `select * from internal.idempotency_claim_limited(${counting.sqlArguments()}, ${claimArgs})`
          : `select * from internal.idempotency_claim(${claimArgs})`,
      ).simple() // one Query message (shared/db/sql_literal.ts)
    );
    // Over quota: 429 with the fields (nothing was claimed).
    counting?.settle({ allowed: row.allowed!, remaining: row.remaining!, reset_ms: row.reset_ms! });
    maybePurge();
    switch (row.outcome) {
      case "mismatch":
        throw new Unprocessable(
          "IDEMPOTENCY_KEY_REUSED",
          "This Idempotency-Key was already used with a different request; use a new key.",
        );
      case "in_use":
        throw new Conflict(
          "IDEMPOTENCY_KEY_IN_USE",
          "A request with this Idempotency-Key is still in flight; retry later.",
          retryAfterSeconds(row.retry_after_ms ?? 1000),
        );
      case "replay":
        return c.body(row.response_body ?? "", row.response_status as 200, {
          "content-type": "application/json; charset=utf-8",
          "idempotent-replayed": "true",
        });
    }

    let settled = false;
    const where = `scope = ${literal(scope)} and owner = ${literal(owner)} and key = ${
      literal(key)
    } and lease = ${literal(lease)} and state = 'in_progress'`;
    const claim: IdempotencyClaim = {
      key,
      keyId: row.key_id!,
      attempt: row.attempt!,
      resuming: row.outcome === "resumed",
      async complete(tx, status, body) {
        if (!Number.isInteger(status) || status < 200 || status > 599) {
          throw new Error(`Cannot store status ${status} as an idempotent answer`);
        }
        const text = typeof body === "string" ? body : JSON.stringify(body);
        const done = await tx.unsafe(
          `update internal.idempotency_keys set state = 'completed', response_status = ${status},
            response_body = ${literal(text)}, lease = null, locked_until = null,
            updated_at = clock_timestamp()
          where ${where} returning 1`,
        );
        if (done.length === 0) throw new IdempotencyLeaseLost();
        settled = true;
      },
      async release(tx) {
        const text = `update internal.idempotency_keys set lease = null,
            locked_until = clock_timestamp(), updated_at = clock_timestamp()
          where ${where} returning 1`;
        const done = tx ? await tx.unsafe(text) : await db.query((sql) => sql.unsafe(text));
        if (done.length === 0) throw new IdempotencyLeaseLost();
        settled = true;
      },
      async settleWith(run) {
        let result;
        try {
          result = await run({ scope, owner, key, lease });
        } catch (err) {
          if (leaseLost(err)) throw new IdempotencyLeaseLost();
          throw err;
        }
        settled = true;
        return result;
      },
    };
    c.set(VARIABLE satisfies keyof IdempotencyVariables, claim);
    await next();
    // A handler that threw (its transaction rolled back, whatever it called) or forgot to settle
    // hands the key to the next retry. Conditional on the lease: a no-op once completed.
    if (c.error || !settled) {
      await claim.release().catch(() => {/* the lock timeout hands it over instead */});
    }
  };
}

/** Deletes up to `batchSize` expired keys; safe to run from any number of instances at once. */
/** What `expiredKeysPurge` needs (IDEMPOTENCY_PURGE_INTERVAL_SECONDS and _BATCH_SIZE). */
export interface KeysPurgeOptions {
  db: Database;
  intervalSeconds: number;
  batchSize: number;
  background: (work: Promise<unknown>) => void;
  log: Pick<Logger, "info" | "warn">;
  now?: () => number;
}

/**
 * Expired keys purged on the housekeeping schedule (at most once per `intervalSeconds` per
 * instance, `batchSize` at a time, as background work): call the returned function after a
 * request (the idempotency guard's, and the function's scheduled job's).
 */
export function expiredKeysPurge(o: KeysPurgeOptions): () => void {
  return housekeeping({
    name: "idempotency keys",
    intervalMs: o.intervalSeconds * 1000,
    run: () => purgeExpiredKeys(o.db, o.batchSize),
    log: o.log,
    background: o.background,
    now: o.now,
  });
}

export async function purgeExpiredKeys(db: Database, batchSize: number): Promise<number> {
  const [row] = await db.query((sql) =>
    sql.unsafe<{ n: number }[]>(`select internal.idempotency_purge(${literal(batchSize)}) as n`)
  );
  return row.n;
}
