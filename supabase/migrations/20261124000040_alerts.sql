-- The durable queue of operator alerts (functions/discord-alert, shared/alert_queue.ts).
-- One row is one Discord message: alerts with the same dedup_key within the dedup window are
-- counted into the row still queued (`count`), or into a follow-up row once it was sent.
-- Private to the functions: it lives in `internal`, which no API role can read.
create table if not exists internal.alerts (
  id uuid primary key default gen_random_uuid(),
  -- FIFO order within a priority (ids are random).
  seq bigint generated always as identity,
  severity text not null check (severity in ('info', 'warning', 'critical')),
  -- 0 critical, 1 warning, 2 info: drained in this order.
  priority smallint not null check (priority between 0 and 2),
  title text not null,
  message text not null,
  dedup_key text,
  -- Start of the dedup group this row belongs to (a follow-up keeps its group's start).
  window_started_at timestamptz not null default now(),
  -- Set on a follow-up row: occurrences after the group's message went out.
  repeat_of uuid,
  count integer not null default 1 check (count > 0),
  -- 'api' (POST /discord-alert) or 'direct' (sent straight to Discord by operator_alerts.ts).
  source text not null default 'api' check (source in ('api', 'direct')),
  state text not null default 'queued' check (state in ('queued', 'sent', 'dead')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  -- A drainer's claim: nobody else sends the row until it passes.
  locked_until timestamptz,
  locked_by text,
  last_error text,
  discord_message_id text,
  -- How many occurrences the sent message stated.
  sent_count integer,
  created_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  sent_at timestamptz
);

-- The drainers' claim order.
create index if not exists alerts_queued on internal.alerts (priority, seq) where state = 'queued';
-- Finding a dedup group.
create index if not exists alerts_dedup on internal.alerts (dedup_key, window_started_at desc)
  where dedup_key is not null;
-- Status counts and the retention purge.
create index if not exists alerts_sent_at on internal.alerts (sent_at) where state = 'sent';

revoke all on internal.alerts from public;
