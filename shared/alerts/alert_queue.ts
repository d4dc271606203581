/**
 * The durable alert queue in Postgres (`internal.alerts`): what is stored, in which order it is
 * claimed, and how a claim ends. Safe with any number of drainers (shared/alerts/alert_drainer.ts) at
 * once, in one instance or many.
 *
 * - Order: critical, then warning, then info; first in, first out within a severity.
 * - Dedup: at most one row per `dedupKey` is queued (a partial unique index), and an alert with
 *   a key is counted into it by one atomic upsert (`insert … on conflict … do update`): no lock
 *   is held across statements, so a burst on any number of instances is one short row update
 *   each, never a queue behind a lock. While the key's message waits to go out every occurrence
 *   counts into it; once it has gone out, later occurrences within ALERT_DEDUP_WINDOW_SECONDS of
 *   the group's first one collect in one follow-up row that is sent as "(occurred N more times
 *   since the last message)"; past the window a new group starts. An alert with a key first
 *   waits ALERT_GROUP_WAIT_MS so a burst becomes one message (Alertmanager's `group_wait`).
 * - Claims: a drainer takes the next due row with `for update skip locked` and sets a lease
 *   (`locked_until`, ALERT_LEASE_MS); a drainer that died simply lets its lease pass. The row is
 *   marked sent right after Discord confirmed the message (`?wait=true`), before the lease ends,
 *   so no two drainers ever send it. (A drainer that loses the database between Discord's
 *   answer and that update retries the update; if it never lands, the row is sent again after
 *   the lease: at least once, never silently dropped.)
 * - Failures: `markFailed` queues the row again after a jittered exponential backoff, or leaves
 *   it `dead` after ALERT_MAX_ATTEMPTS; `markDead` for a message Discord refused; `release`
 *   gives a claim back without using an attempt (rate limited, webhook unusable, breaker open).
 *
 * @example
 * ```ts
 * import { AlertQueue } from "./alert_queue.ts";
 * import type { Database } from "../db/db.ts";
 * import { parseLimits } from "../limits.ts";
 *
 * declare const db: Database;
 * const queue = new AlertQueue(db, parseLimits({}));
 * const { id, coalesced } = await queue.enqueue({
 *   severity: "critical",
 *   title: "Broker unreachable",
 *   message: "Orders are refused with 503 until it answers.",
 *   dedupKey: "broker-down",
 * });
 * const alert = await queue.claim(); // null when nothing is due
 * ```
 */
import { fullJitter } from "../resilience/backoff.ts";
import type { Database } from "../db/db.ts";
import type { Severity } from "./severity.ts";
import type { Limits } from "../limits.ts";
import { clip } from "../text.ts";

/** Claim order: lower first. */
const PRIORITY: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

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

/** A queued critical alert handed to the fallback channel. */
export interface ForwardableAlert {
  id: string;
  title: string;
  message: string;
  dedupKey: string | null;
  count: number;
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

export type QueueLimits = Pick<
  Limits,
  | "ALERT_DEDUP_WINDOW_SECONDS"
  | "ALERT_MAX_ATTEMPTS"
  | "ALERT_GROUP_WAIT_MS"
  | "ALERT_RETRY_BASE_MS"
  | "ALERT_RETRY_MAX_MS"
  | "ALERT_LEASE_MS"
  | "ALERT_RETENTION_DAYS"
  | "ALERT_PURGE_BATCH_SIZE"
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

  /**
   * Stores an alert, or counts it into its key's queued message: one statement either way (an
   * upsert on the partial unique index `alerts_queued_dedup`), so concurrent enqueues of one key
   * on any number of instances each wait only for the other's row update.
   */
  async enqueue(alert: NewAlert): Promise<EnqueueResult> {
    const priority = PRIORITY[alert.severity];
    const key = alert.dedupKey;
    if (key === undefined) {
      const [row] = await this.#db.query((sql) =>
        sql<{ id: string }[]>`
          insert into internal.alerts (severity, priority, title, message)
          values (${alert.severity}, ${priority}, ${alert.title}, ${alert.message})
          returning id`
      );
      return { id: row.id, coalesced: false };
    }
    const window = this.#l.ALERT_DEDUP_WINDOW_SECONDS;
    const [row] = await this.#db.query((sql) =>
      sql<{ id: string; inserted: boolean }[]>`
        with grp as (
          -- The group's message already went out (or died): occurrences within its window
          -- collect in a follow-up row; past the window a new group starts.
          select coalesce(repeat_of, id) as first, window_started_at as started
          from internal.alerts
          where dedup_key = ${key} and state in ('sent', 'dead')
            and window_started_at > now() - make_interval(secs => ${window}::int)
          order by seq desc limit 1
        )
        insert into internal.alerts as a
          (severity, priority, title, message, dedup_key, window_started_at, repeat_of, next_attempt_at)
        select ${alert.severity}, ${priority}::smallint, ${alert.title}, ${alert.message}, ${key},
          coalesce((select started from grp), now()), (select first from grp),
          now() + make_interval(secs => ${this.#l.ALERT_GROUP_WAIT_MS / 1000}::float8)
        on conflict (dedup_key) where state = 'queued' and dedup_key is not null
        do update set
          count = a.count + 1,
          last_seen_at = now(),
          severity = case when excluded.priority < a.priority then excluded.severity else a.severity end,
          priority = least(a.priority, excluded.priority)
        returning a.id, (a.xmax = 0) as inserted`
    );
    return { id: row.id, coalesced: !row.inserted };
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
   * while it was being sent move to a follow-up row, in the same statement, so none goes
   * unreported (an enqueue of the key waits for this row update, then counts into the follow-up).
   */
  async markSent(alert: ClaimedAlert, messageId: string): Promise<void> {
    await this.#db.query((sql) =>
      sql`
        with done as (
          update internal.alerts
          set state = 'sent', sent_at = now(), sent_count = ${alert.count}, attempts = attempts + 1,
              discord_message_id = ${messageId}, locked_until = null, last_error = null
          where id = ${alert.id} and state = 'queued'
          returning *
        )
        insert into internal.alerts (severity, priority, title, message, dedup_key,
          window_started_at, repeat_of, count, next_attempt_at, last_seen_at, fallback_at)
        select severity, priority, title, message, dedup_key, window_started_at,
          coalesce(repeat_of, id), count - ${alert.count}::int,
          now() + make_interval(secs => ${
        this.#l.ALERT_GROUP_WAIT_MS / 1000
      }::float8), last_seen_at,
          fallback_at
        from done where count > ${alert.count}::int`
    );
  }

  /**
   * Records a failed attempt (5xx, timeout): back to the queue after a jittered exponential
   * backoff, or dead after ALERT_MAX_ATTEMPTS. Returns the row's new state.
   */
  async markFailed(alert: ClaimedAlert, reason: string): Promise<"queued" | "dead"> {
    const attempt = alert.attempts + 1;
    const dead = attempt >= this.#l.ALERT_MAX_ATTEMPTS;
    // The suite's one backoff (full jitter): spread retries from many drainers over the window.
    const delayMs = fullJitter(
      attempt - 1,
      this.#l.ALERT_RETRY_BASE_MS,
      this.#l.ALERT_RETRY_MAX_MS,
      this.#random,
    );
    const finalReason = dead ? `gave up after ${attempt} attempts: ${reason}` : reason;
    await this.#db.query((sql) =>
      sql`
        update internal.alerts
        set attempts = attempts + 1, last_error = ${clip(finalReason, 500)},
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
        set state = 'dead', attempts = attempts + 1, last_error = ${clip(reason, 500)},
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

  /**
   * Queued critical alerts not yet given to the fallback channel (oldest first, at most `max`),
   * each marked as given in the same statement, so the fleet forwards each one once.
   */
  async takeUnforwardedCritical(max: number): Promise<ForwardableAlert[]> {
    const rows = await this.#db.query((sql) =>
      sql<
        { id: string; title: string; message: string; dedup_key: string | null; count: number }[]
      >`
        with next as (
          select id from internal.alerts
          where state = 'queued' and severity = 'critical' and fallback_at is null
          order by seq limit ${max}
          for update skip locked
        )
        update internal.alerts a set fallback_at = now()
        from next where a.id = next.id
        returning a.id, a.title, a.message, a.dedup_key, a.count`
    );
    return rows.map((r) => ({
      id: r.id,
      title: r.title,
      message: r.message,
      dedupKey: r.dedup_key,
      count: r.count,
    }));
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
            limit ${this.#l.ALERT_PURGE_BATCH_SIZE})
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

/** A direct operator alert, recorded once the database is reachable. */
export interface DirectRecord {
  id: string;
  title: string;
  message: string;
  occurredAt: number;
  /** Set when the direct send succeeded: the row is stored as sent and never re-sent. */
  sentAt?: number;
  messageId?: string;
}

/**
 * Records a direct operator alert in the alert queue's table, once (its id makes it
 * idempotent): as sent when the direct send worked, else queued for the drainer.
 */
export async function recordDirect(db: Database, rec: DirectRecord): Promise<void> {
  const sent = rec.sentAt !== undefined;
  const occurred = new Date(rec.occurredAt);
  await db.query((sql) =>
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
