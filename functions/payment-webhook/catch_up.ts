/**
 * The catch-up: events whose webhook never reached us (Stripe gave up after three days, a
 * disabled endpoint, a wrong signing secret after a rotation) are read back from Stripe's event
 * list and applied through the same exactly-once path as a delivered webhook, so no payment is
 * lost (https://docs.stripe.com/webhooks/process-undelivered-events).
 *
 * **The algorithm.** Stripe lists events newest first; paging with `starting_after` goes to older
 * ones, and new events appear at the top. So a run never pages toward newer events: it scans a
 * FIXED window `created ∈ [from, to]` from its newest event down, and the window itself moves
 * forward in time, scan after scan.
 * 1. A scan starts with `to` = now and `from` = the covered time minus
 *    STRIPE_CATCHUP_OVERLAP_SECONDS (the first: now minus STRIPE_CATCHUP_LOOKBACK_HOURS).
 * 2. It reads `GET /v1/events?types[]=<handled>&created[gte]=from&created[lte]=to&limit=100`
 *    with the library's auto-pagination. For each page: one read of which ids are recorded, then
 *    one statement per event that is not (`internal.stripe_event_catch_up`: claim, out-of-order
 *    guarded effect, outcome; a webhook or another run racing on the same id waits on its
 *    primary key and finds it a duplicate). Nothing is skipped: an event that cannot be stored
 *    as it is was recorded as ignored with the reason, like a webhook.
 * 3. A run stops after STRIPE_CATCHUP_MAX_EVENTS events. Then the scan is saved with the id of
 *    the last (oldest) event it finished, and the next run resumes it with `starting_after`:
 *    the window is fixed, so the pages behind that id are exactly those not yet read. A backlog
 *    of any size drains over runs.
 * 4. When a scan reaches the end of its window, everything created up to `to` is recorded: the
 *    covered time becomes `to`. Events created while it paged have `created` > `to` (they are
 *    the next scan's); an event Stripe listed only after the scan passed its place has `created`
 *    within the listing delay of the moment it was listed, so within the overlap of the next
 *    scan's `from`. Re-read events cost one read per page and no write.
 *    A scan resumed after an event Stripe no longer lists (older than its 30 days) ends there:
 *    everything behind that event is older still.
 * 5. The cursor moves only past what was recorded, and is written only when it changed for a
 *    reason: something was recorded, a scan stopped at the bound or finished one that had, the
 *    run read more than one page, or it moves by STRIPE_CATCHUP_CHECKPOINT_SECONDS. A run that
 *    finds nothing new in a page writes nothing. The write is conditional on the version read
 *    (catch_up_store.ts), so two runs racing never move it back.
 *
 * Any failure (Stripe's API, the database) ends the run with what it recorded so far committed
 * event by event and the cursor where it was: `503` (`502` when Stripe refused the request),
 * and the next run re-reads what this one did not finish.
 *
 * A run that recorded anything tells operators: those events' webhooks were missed.
 *
 * @example
 * ```ts
 * import type { FunctionContext } from "../../shared/platform/app.ts";
 * import { catchUpRoute } from "./catch_up.ts";
 * import type { EventIterator, EventListParams } from "./stripe_api.ts";
 *
 * declare const ctx: FunctionContext<unknown>;
 * declare const list: (p: EventListParams) => EventIterator;
 * const handler = catchUpRoute({ ...ctx, events: { list } });
 * ```
 */
import type { Context } from "hono";
import type { Platform } from "../../shared/platform/platform.ts";
import { HttpError } from "../../shared/errors.ts";
import { catchUpStripeEvent, HANDLED_TYPES } from "./effects.ts";
import { eventRecord } from "./receive.ts";
import {
  type Cursor,
  knownEventIds,
  loadCatchUpState,
  saveCatchUpState,
  type Scan,
} from "./catch_up_store.ts";
import {
  CursorEventGone,
  type EventIterator,
  type EventListParams,
  stripeFailure,
} from "./stripe_api.ts";

/** Stripe's largest page. */
const PAGE_MAX = 100;

/** What a run did (the route's `200` body). */
export interface CatchUpResult {
  /** Events recorded by this run whose effect was applied. */
  applied: number;
  /** Events recorded by this run without effect (malformed, a newer state already stored…). */
  ignored: number;
  /** Events read that were already recorded (by a webhook or an earlier run). */
  alreadyApplied: number;
  /** Events read from Stripe, and the pages they came in. */
  read: number;
  pages: number;
  /** The run stopped at its bound: the next run continues the scan. */
  hasMore: boolean;
  /** Whether this run wrote the cursor. */
  cursorSaved: boolean;
  cursor: {
    /** Everything created up to this time is recorded (ISO); null before the first scan ends. */
    coveredUntil: string | null;
    /** Seconds from `coveredUntil` to now. */
    lagSeconds: number | null;
    scan: { from: string; to: string; after: string | null } | null;
  };
}

export interface CatchUpOptions extends Pick<Platform, "db" | "limits" | "log" | "now"> {
  events: { list(p: EventListParams): EventIterator };
  /** Told when a run recorded events whose webhook never arrived (platform.alertOperators). */
  alertOperators: Platform["alertOperators"];
}

/** One bounded run (see the module's summary). Throws the typed failures it answers with. */
export async function runCatchUp(opts: CatchUpOptions): Promise<CatchUpResult> {
  const { db, limits, log } = opts;
  const stored = await loadCatchUpState(db);
  const now = Math.floor(opts.now() / 1000);
  const scan: Scan = stored.scan ?? {
    from: Math.min(
      now,
      stored.coveredUntil === null
        ? now - limits.STRIPE_CATCHUP_LOOKBACK_HOURS * 3600
        : stored.coveredUntil - limits.STRIPE_CATCHUP_OVERLAP_SECONDS,
    ),
    to: now,
    after: null,
  };
  const pageSize = Math.min(PAGE_MAX, limits.STRIPE_CATCHUP_MAX_EVENTS);
  const list = opts.events.list({
    types: [...HANDLED_TYPES],
    created: { gte: scan.from, lte: scan.to },
    limit: pageSize,
    ...(scan.after ? { starting_after: scan.after } : {}),
  });

  const result = { applied: 0, ignored: 0, alreadyApplied: 0, read: 0, pages: 0 };
  let after = scan.after;
  let done = false;
  try {
    while (!done && result.read < limits.STRIPE_CATCHUP_MAX_EVENTS) {
      // One page: the library fetches the next page when this one is used up.
      const page: unknown[] = [];
      while (page.length < pageSize) {
        const next = await list.next().catch((err) => {
          // The scan resumed after an event Stripe no longer lists: everything older than it is
          // past Stripe's 30 days too, so nothing is left to read in this window.
          if (err instanceof CursorEventGone) {
            log.warn("stripe catch-up: the scan's cursor event expired; the scan ends here");
            return { done: true as const, value: undefined };
          }
          throw err;
        });
        if (next.done) {
          done = true;
          break;
        }
        page.push(next.value);
      }
      if (page.length === 0) break;
      result.pages++;
      result.read += page.length;
      await recordPage(opts, page, result);
      after = eventId(page[page.length - 1]);
    }
  } catch (err) {
    // Committed events stay recorded; the cursor stays where it was: the next run re-reads.
    const failure = err instanceof HttpError ? err : stripeFailure(err);
    log.warn("stripe catch-up stopped; the next run continues", {
      code: failure.code,
      recorded: result.applied + result.ignored,
      error: err,
    });
    if (result.applied + result.ignored > 0) missed(opts, result);
    throw failure;
  }

  const next: Cursor = done
    ? { coveredUntil: scan.to, scan: null }
    : { coveredUntil: stored.coveredUntil, scan: { ...scan, after } };
  const moved = stored.coveredUntil === null || stored.scan !== null || !done ||
    result.applied + result.ignored > 0 || result.pages > 1 ||
    scan.to - stored.coveredUntil >= limits.STRIPE_CATCHUP_CHECKPOINT_SECONDS;
  const cursorSaved = moved ? await saveCatchUpState(db, stored, next) : false;
  const cursor = moved && cursorSaved ? next : stored;

  if (result.applied + result.ignored > 0) missed(opts, result);
  log.info("stripe catch-up run", { ...result, hasMore: !done, cursorSaved });
  return {
    ...result,
    hasMore: !done,
    cursorSaved,
    cursor: {
      coveredUntil: iso(cursor.coveredUntil),
      lagSeconds: cursor.coveredUntil === null ? null : Math.max(0, now - cursor.coveredUntil),
      scan: cursor.scan
        ? { from: iso(cursor.scan.from)!, to: iso(cursor.scan.to)!, after: cursor.scan.after }
        : null,
    },
  };
}

/** Records the page's events that are not recorded yet, oldest first, one statement each. */
async function recordPage(
  opts: CatchUpOptions,
  page: unknown[],
  result: { applied: number; ignored: number; alreadyApplied: number },
): Promise<void> {
  const known = await knownEventIds(opts.db, page.map(eventId));
  for (const event of page.slice().reverse()) {
    const id = eventId(event);
    if (known.has(id)) {
      result.alreadyApplied++;
      continue;
    }
    const record = eventRecord(event);
    if (!record) throw stripeFailure(new Error("Unexpected: Stripe API response has a bad event"));
    const outcome = await catchUpStripeEvent(opts.db, record);
    if (outcome === "duplicate") result.alreadyApplied++; // a webhook or another run was first
    else if (outcome.outcome === "applied") result.applied++;
    else result.ignored++;
  }
}

function eventId(event: unknown): string {
  const id = (event as { id?: unknown })?.id;
  if (typeof id !== "string" || id.length === 0 || id.length > 255) {
    throw stripeFailure(new Error("Unexpected: Stripe API response has an event without an id"));
  }
  return id;
}

function missed(opts: CatchUpOptions, r: { applied: number; ignored: number }): void {
  opts.alertOperators(
    "stripe-catch-up",
    "Stripe webhooks are being missed",
    `The Stripe catch-up recorded ${r.applied + r.ignored} event(s) whose webhook never arrived ` +
      `(${r.applied} applied, ${r.ignored} without effect). Check the endpoint in Stripe's ` +
      "dashboard: is it disabled, failing, or signed with a secret STRIPE_WEBHOOK_SECRET lacks?",
  );
}

const iso = (s: number | null) => s === null ? null : new Date(s * 1000).toISOString();

/** `POST /catch-up`: one run, `200` with what it did. */
export function catchUpRoute(opts: CatchUpOptions) {
  return async function catchUp(c: Context): Promise<Response> {
    return c.json(await runCatchUp(opts), 200);
  };
}
