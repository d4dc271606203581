/**
 * The durable alert queue in Postgres (`internal.alerts`) and the drainer that delivers it to
 * Discord. Safe with any number of drainers at once, in one instance or many.
 *
 * - Order: critical, then warning, then info; first in, first out within a severity.
 * - Dedup: alerts with the same `dedupKey` within ALERT_DEDUP_WINDOW_SECONDS of the group's
 *   first one are counted into the group's row while it is not yet sent (`count + 1`, atomically,
 *   serialized per key by a transaction-scoped advisory lock). Once the group's message has gone
 *   out, later occurrences in the same window collect in one follow-up row that is sent as
 *   "(occurred N more times since the last message)". An alert with a key first waits
 *   ALERT_GROUP_WAIT_MS so a burst becomes one message (Alertmanager's `group_wait`).
 * - Claims: a drainer takes the next due row with `for update skip locked` and sets a lease
 *   (`locked_until`, ALERT_LEASE_MS); a drainer that died simply lets its lease pass. The row is
 *   marked sent right after Discord confirmed the message (`?wait=true`), before the lease ends,
 *   so no two drainers ever send it. (A drainer that loses the database between Discord's
 *   answer and that update retries the update; if it never lands, the row is sent again after
 *   the lease: at least once, never silently dropped.)
 * - Failures: 5xx and timeouts retry with jittered exponential backoff (`next_attempt_at`); a
 *   `429` waits for Discord's `retry_after` without using an attempt; another 4xx, or
 *   ALERT_MAX_ATTEMPTS failures, leaves the row `dead` with the reason, shown by `status`.
 *
 * @example
 * const queue = new AlertQueue(db, limits);
 * const { id, coalesced } = await queue.enqueue({ severity: "critical", title, message, dedupKey });
 * const drainer = new AlertDrainer({ queue, client, breaker, limits, log });
 * const report = await drainer.drain(); // { sent, deferred, retried, dead, stopped, remaining }
 */
import type { Breaker } from "./circuit_breaker.ts";
import type { Database, Tx } from "./db.ts";
import {
  DiscordClient,
  DiscordRateLimited,
  DiscordRejected,
  renderAlert,
  type Severity,
} from "./discord_client.ts";
import { CircuitOpen, HttpError, UpstreamUnavailable } from "./errors.ts";
import type { Limits } from "./limits.ts";
import type { Logger } from "./logger.ts";

/** Claim order: lower first. */
export const PRIORITY: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/** An alert to store; `title` and `message` already sanitized for Discord (see index.ts). */
export interface NewAlert {
  severity: Severity;
  title: string;
  message: string;
  dedupKey?: string;
}

export interface EnqueueResult {
  id: string;
  /** The alert was counted into a message already queued rather than queued on its own. */
  coalesced: boolean;
}

/** A claimed row, ready to render and send. */
export interface ClaimedAlert {
  id: string;
  severity: Severity;
  title: string;
  message: string;
  dedupKey: string | null;
  count: number;
  repeat: boolean;
  attempts: number;
  firstSeenAt: number;
}

/** What `status` shows about the queue. */
export interface AlertStats {
  queued: number;
  /** Queued rows a drainer holds right now. */
  sending: number;
  /** Queued rows that failed at least once and wait for their next attempt. */
  retrying: number;
  dead: number;
  sentLastHour: number;
  oldestQueuedAt: string | null;
  /** The latest dead letters with their reasons. */
  recentDead: { id: string; title: string; reason: string | null; at: string }[];
}

/** A direct operator alert, recorded once the database is reachable (operator_alerts.ts). */
export interface DirectRecord {
  id: string;
  title: string;
  message: string;
  occurredAt: number;
  /** Set when the direct send succeeded: the row is stored as sent and never re-sent. */
  sentAt?: number;
  messageId?: string;
}

export type QueueLimits = Pick<
  Limits,
  | "ALERT_DEDUP_WINDOW_SECONDS"
  | "ALERT_MAX_ATTEMPTS"
  | "ALERT_GROUP_WAIT_MS"
  | "ALERT_RETRY_BASE_MS"
  | "ALERT_RETRY_MAX_MS"
  | "ALERT_LEASE_MS"
  | "ALERT_RETENTION_DAYS"
  | "DISCORD_TIMEOUT_MS"
>;

interface Row {
  id: string;
  severity: Severity;
  title: string;
  message: string;
  dedup_key: string | null;
  count: number;
  repeat_of: string | null;
  attempts: number;
  first_seen_ms: number;
}

/** The queue's storage operations. Every method throws DatabaseUnavailable when the database is down. */
export class AlertQueue {
  readonly #db: Database;
  readonly #l: QueueLimits;
  readonly #random: () => number;
  /** Names this queue's claims in `locked_by`. */
  readonly worker: string;

  constructor(
    db: Database,
    limits: QueueLimits,
    opts: { worker?: string; random?: () => number } = {},
  ) {
    this.#db = db;
    this.#l = { ...limits };
    this.#random = opts.random ?? Math.random;
    this.worker = opts.worker ?? `drainer-${crypto.randomUUID().slice(0, 8)}`;
  }

  /** The lease: never shorter than twice a send's deadline, so a live drainer keeps its claim. */
  get leaseMs(): number {
    return Math.max(this.#l.ALERT_LEASE_MS, 2 * this.#l.DISCORD_TIMEOUT_MS);
  }

  /** Stores an alert, or counts it into its dedup group's queued message. */
  enqueue(alert: NewAlert): Promise<EnqueueResult> {
    const priority = PRIORITY[alert.severity];
    const window = this.#l.ALERT_DEDUP_WINDOW_SECONDS;
    return this.#db.transaction(async (tx) => {
      const key = alert.dedupKey;
      if (key === undefined) {
        const [row] = await tx<{ id: string }[]>`
          insert into internal.alerts (severity, priority, title, message)
          values (${alert.severity}, ${priority}, ${alert.title}, ${alert.message})
          returning id`;
        return { id: row.id, coalesced: false };
      }
      await lockKey(tx, key);
      const [hit] = await tx<{ id: string }[]>`
        update internal.alerts set
          count = count + 1,
          last_seen_at = now(),
          severity = case when ${priority}::smallint < priority then ${alert.severity}::text else severity end,
          priority = least(priority, ${priority}::smallint)
        where state = 'queued' and id = (
          select id from internal.alerts
          where dedup_key = ${key} and state = 'queued'
            and window_started_at > now() - make_interval(secs => ${window}::int)
          order by seq desc limit 1)
        returning id`;
      if (hit) return { id: hit.id, coalesced: true };
      // The group's message already went out (or died): later occurrences in its window collect
      // in a follow-up row; past the window a new group starts.
      const [group] = await tx<{ first: string; started: Date }[]>`
        select coalesce(repeat_of, id) as first, window_started_at as started
        from internal.alerts
        where dedup_key = ${key} and state in ('sent', 'dead')
          and window_started_at > now() - make_interval(secs => ${window}::int)
        order by seq desc limit 1`;
      const [row] = await tx<{ id: string }[]>`
        insert into internal.alerts
          (severity, priority, title, message, dedup_key, window_started_at, repeat_of, next_attempt_at)
        values (${alert.severity}, ${priority}, ${alert.title}, ${alert.message}, ${key},
          coalesce(${group?.started ?? null}::timestamptz, now()), ${group?.first ?? null}::uuid,
          now() + make_interval(secs => ${this.#l.ALERT_GROUP_WAIT_MS / 1000}::float8))
        returning id`;
      return { id: row.id, coalesced: false };
    });
  }

  /** Claims the next due row (critical first, FIFO within) for one lease; null when none is due. */
  async claim(): Promise<ClaimedAlert | null> {
    const [row] = await this.#db.query((sql) =>
      sql<Row[]>`
        with next as (
          select id from internal.alerts
          where state = 'queued' and next_attempt_at <= now()
            and (locked_until is null or locked_until <= now())
          order by priority, seq
          limit 1
          for update skip locked
        )
        update internal.alerts a
        set locked_until = now() + make_interval(secs => ${this.leaseMs / 1000}::float8),
            locked_by = ${this.worker}
        from next where a.id = next.id
        returning a.id, a.severity, a.title, a.message, a.dedup_key, a.count, a.repeat_of,
          a.attempts, (extract(epoch from a.created_at) * 1000)::float8 as first_seen_ms`
    );
    if (!row) return null;
    return {
      id: row.id,
      severity: row.severity,
      title: row.title,
      message: row.message,
      dedupKey: row.dedup_key,
      count: row.count,
      repeat: row.repeat_of !== null,
      attempts: row.attempts,
      firstSeenAt: Number(row.first_seen_ms),
    };
  }

  /**
   * Marks a claimed row sent with the count its message stated. Occurrences counted into it
   * while it was being sent move to a follow-up row, so none goes unreported.
   */
  markSent(alert: ClaimedAlert, messageId: string): Promise<void> {
    return this.#db.transaction(async (tx) => {
      if (alert.dedupKey !== null) await lockKey(tx, alert.dedupKey);
      await tx`
        with done as (
          update internal.alerts
          set state = 'sent', sent_at = now(), sent_count = ${alert.count}, attempts = attempts + 1,
              discord_message_id = ${messageId}, locked_until = null, last_error = null
          where id = ${alert.id} and state = 'queued'
          returning *
        )
        insert into internal.alerts (severity, priority, title, message, dedup_key,
          window_started_at, repeat_of, count, next_attempt_at, last_seen_at)
        select severity, priority, title, message, dedup_key, window_started_at,
          coalesce(repeat_of, id), count - ${alert.count}::int,
          now() + make_interval(secs => ${this.#l.ALERT_GROUP_WAIT_MS / 1000}::float8), last_seen_at
        from done where count > ${alert.count}::int`;
    });
  }

  /**
   * Records a failed attempt (5xx, timeout): back to the queue after a jittered exponential
   * backoff, or dead after ALERT_MAX_ATTEMPTS. Returns the row's new state.
   */
  async markFailed(alert: ClaimedAlert, reason: string): Promise<"queued" | "dead"> {
    const attempt = alert.attempts + 1;
    const dead = attempt >= this.#l.ALERT_MAX_ATTEMPTS;
    const exp = Math.min(
      this.#l.ALERT_RETRY_MAX_MS,
      this.#l.ALERT_RETRY_BASE_MS * 2 ** (attempt - 1),
    );
    // Equal jitter: never less than half the step, so a failing upstream is not hammered.
    const delayMs = Math.round(exp / 2 + this.#random() * exp / 2);
    const finalReason = dead ? `gave up after ${attempt} attempts: ${reason}` : reason;
    await this.#db.query((sql) =>
      sql`
        update internal.alerts
        set attempts = attempts + 1, last_error = ${finalReason.slice(0, 500)},
            state = ${dead ? "dead" : "queued"}, locked_until = null, locked_by = null,
            next_attempt_at = now() + make_interval(secs => ${delayMs / 1000}::float8)
        where id = ${alert.id} and state = 'queued'`
    );
    return dead ? "dead" : "queued";
  }

  /** Dead-letters a row Discord refused for good (a 4xx other than 429), with the reason. */
  async markDead(alert: ClaimedAlert, reason: string): Promise<void> {
    await this.#db.query((sql) =>
      sql`
        update internal.alerts
        set state = 'dead', attempts = attempts + 1, last_error = ${reason.slice(0, 500)},
            locked_until = null, locked_by = null
        where id = ${alert.id} and state = 'queued'`
    );
  }

  /** Gives a claim back without using an attempt (rate limited, circuit open). */
  async release(alert: ClaimedAlert, delayMs = 0): Promise<void> {
    await this.#db.query((sql) =>
      sql`
        update internal.alerts
        set locked_until = null, locked_by = null,
            next_attempt_at = greatest(next_attempt_at,
              now() + make_interval(secs => ${delayMs / 1000}::float8))
        where id = ${alert.id} and state = 'queued' and locked_by = ${this.worker}`
    );
  }

  /** Ms until the next queued row is due (0: now), or null when nothing is queued and unclaimed. */
  async nextDueInMs(): Promise<number | null> {
    const [row] = await this.#db.query((sql) =>
      sql<{ ms: number | null }[]>`
        select (extract(epoch from (min(next_attempt_at) - now())) * 1000)::float8 as ms
        from internal.alerts
        where state = 'queued' and (locked_until is null or locked_until <= now())`
    );
    return row.ms === null ? null : Math.max(0, Math.ceil(Number(row.ms)));
  }

  /** Records a direct operator alert (once: its id makes it idempotent). */
  async recordDirect(rec: DirectRecord): Promise<void> {
    const sent = rec.sentAt !== undefined;
    const occurred = new Date(rec.occurredAt);
    await this.#db.query((sql) =>
      sql`
        insert into internal.alerts (id, severity, priority, title, message, source, state,
          sent_count, sent_at, discord_message_id, created_at, last_seen_at, window_started_at)
        values (${rec.id}::uuid, 'critical', ${PRIORITY.critical}, ${rec.title}, ${rec.message},
          'direct', ${sent ? "sent" : "queued"}, ${sent ? 1 : null}::int,
          ${sent ? new Date(rec.sentAt!) : null}::timestamptz, ${rec.messageId ?? null},
          ${occurred}, ${occurred}, ${occurred})
        on conflict (id) do nothing`
    );
  }

  /** Drops sent rows older than ALERT_RETENTION_DAYS, a bounded batch at a time. Dead rows stay. */
  async purge(): Promise<number> {
    const [row] = await this.#db.query((sql) =>
      sql<{ n: number }[]>`
        with gone as (
          delete from internal.alerts where id in (
            select id from internal.alerts
            where state = 'sent'
              and sent_at < now() - make_interval(days => ${this.#l.ALERT_RETENTION_DAYS}::int)
            limit 500)
          returning 1)
        select count(*)::int as n from gone`
    );
    return row.n;
  }

  /** Counts by state, for `status` and the drain report. */
  stats(): Promise<AlertStats> {
    return alertQueueStats(this.#db);
  }
}

/** Counts by state (queued, dead, sent in the last hour) and the latest dead letters. */
export async function alertQueueStats(db: Database): Promise<AlertStats> {
  return await db.query(async (sql) => {
    const [c] = await sql<
      {
        queued: number;
        sending: number;
        retrying: number;
        dead: number;
        sent_last_hour: number;
        oldest: Date | null;
      }[]
    >`
      select
        count(*) filter (where state = 'queued')::int as queued,
        count(*) filter (where state = 'queued' and locked_until > now())::int as sending,
        count(*) filter (where state = 'queued' and attempts > 0)::int as retrying,
        count(*) filter (where state = 'dead')::int as dead,
        count(*) filter (where state = 'sent' and sent_at > now() - interval '1 hour')::int
          as sent_last_hour,
        min(created_at) filter (where state = 'queued') as oldest
      from internal.alerts`;
    const dead = await sql<{ id: string; title: string; last_error: string | null; at: Date }[]>`
      select id, title, last_error, last_seen_at as at from internal.alerts
      where state = 'dead' order by seq desc limit 5`;
    return {
      queued: c.queued,
      sending: c.sending,
      retrying: c.retrying,
      dead: c.dead,
      sentLastHour: c.sent_last_hour,
      oldestQueuedAt: c.oldest ? new Date(c.oldest).toISOString() : null,
      recentDead: dead.map((d) => ({
        id: d.id,
        title: d.title,
        reason: d.last_error,
        at: new Date(d.at).toISOString(),
      })),
    };
  });
}

/** Serializes work on one dedup key across instances for the rest of the transaction. */
async function lockKey(tx: Tx, key: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${`alert:${key}`}, 0))`;
}

/** What one drain did. */
export interface DrainReport {
  sent: number;
  /** Rate limited by Discord (429): put back without using an attempt. */
  deferred: number;
  /** Failed (5xx, timeout) and queued again with backoff. */
  retried: number;
  /** Dead-lettered (refused by Discord, or out of attempts). */
  dead: number;
  /**
   * Why it stopped: nothing queued (`empty`), queued rows not due before the budget ends
   * (`waiting`: backoff or group wait), the budget spent (`budget`), or the Discord breaker open.
   */
  stopped: "empty" | "waiting" | "budget" | "circuit_open";
  /** Rows still queued after it stopped. */
  remaining: number;
  durationMs: number;
}

export interface DrainerOptions {
  queue: AlertQueue;
  client: DiscordClient;
  /** The "discord" breaker. */
  breaker: Breaker;
  limits: Pick<Limits, "ALERT_DRAIN_BUDGET_MS">;
  log: Logger;
  now?: () => number;
}

/** How often the retention purge runs per drainer. */
const PURGE_EVERY_MS = 3600_000;

/**
 * Delivers the queue within a time budget. `drain()` runs one bounded pass (for `POST /drain`);
 * `kick()` runs passes in the background after an enqueue, one at a time per instance: a kick
 * during a pass wakes it (a new alert may be due now) and asks for one more pass at its end.
 */
export class AlertDrainer {
  readonly #o: DrainerOptions;
  readonly #now: () => number;
  readonly #wakers = new Set<() => void>();
  #running: Promise<void> | undefined;
  #again = false;
  #lastPurge = 0;

  constructor(opts: DrainerOptions) {
    this.#o = { ...opts };
    this.#now = opts.now ?? Date.now;
  }

  /** Starts (or nudges) background delivery; the promise ends when no pass is asked for. Never rejects. */
  kick(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      for (const wake of this.#wakers) wake();
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          try {
            await this.drain();
          } catch (err) {
            // The database is down (the status says so) or a bug: the rows stay queued.
            this.#o.log.warn("alert delivery stopped", { error: err });
          }
        } while (this.#again);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** One pass: sends what is due, in order, until nothing is due, the budget is spent or the breaker opens. */
  async drain(): Promise<DrainReport> {
    const { queue, client, breaker, log } = this.#o;
    const started = this.#now();
    const deadline = started + this.#o.limits.ALERT_DRAIN_BUDGET_MS;
    const report: DrainReport = {
      sent: 0,
      deferred: 0,
      retried: 0,
      dead: 0,
      stopped: "empty",
      remaining: 0,
      durationMs: 0,
    };
    for (;;) {
      const left = deadline - this.#now();
      if (left <= 0) {
        report.stopped = "budget";
        break;
      }
      const wait = client.waitMs();
      if (wait > 0) {
        if (wait >= left) {
          report.stopped = "budget";
          break;
        }
        await this.#sleep(wait);
        continue;
      }
      const alert = await queue.claim();
      if (!alert) {
        const due = await queue.nextDueInMs();
        if (due === null) break; // empty
        if (due >= left) {
          report.stopped = "waiting";
          break;
        }
        await this.#sleep(Math.max(due, 5));
        continue;
      }
      const content = renderAlert(alert);
      let messageId: string;
      try {
        ({ id: messageId } = await breaker.run(() => client.execute(content)));
      } catch (err) {
        if (err instanceof CircuitOpen) {
          await queue.release(alert);
          report.stopped = "circuit_open";
          break;
        }
        if (err instanceof DiscordRateLimited) {
          await queue.release(alert);
          report.deferred++;
          continue;
        }
        if (err instanceof DiscordRejected) {
          await queue.markDead(alert, err.message);
          log.error("alert refused by Discord; dead-lettered", {
            alertId: alert.id,
            reason: err.message,
          });
          report.dead++;
          continue;
        }
        if (err instanceof UpstreamUnavailable) {
          const state = await queue.markFailed(alert, err.message);
          if (state === "dead") {
            log.error("alert undeliverable; dead-lettered", {
              alertId: alert.id,
              reason: err.message,
            });
            report.dead++;
          } else {
            report.retried++;
          }
          continue;
        }
        await queue.release(alert).catch(() => {});
        throw err;
      }
      await this.#recordSent(alert, messageId);
      report.sent++;
    }
    if (this.#now() - this.#lastPurge > PURGE_EVERY_MS) {
      this.#lastPurge = this.#now();
      await queue.purge().catch((err) => log.warn("alert purge failed", { error: err }));
    }
    report.remaining = (await queue.stats()).queued;
    report.durationMs = this.#now() - started;
    return report;
  }

  /** Marks a delivered alert sent, retrying briefly: a row left claimed would be re-sent after its lease. */
  async #recordSent(alert: ClaimedAlert, messageId: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#o.queue.markSent(alert, messageId);
      } catch (err) {
        if (attempt >= 5 || !(err instanceof HttpError)) {
          this.#o.log.error("alert sent but not recorded; it may be sent again after its lease", {
            alertId: alert.id,
            error: err,
          });
          throw err;
        }
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  }

  /** Sleeps `ms`, or less when a kick says new work may be due. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wakers.add(done);
    });
  }
}
