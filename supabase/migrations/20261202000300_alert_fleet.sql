-- Alert delivery shared by every instance (issue 14): the Discord webhook's rate-limit bucket and
-- health, the fallback channel's cooldowns, and coalescing by one atomic upsert.
-- shared/discord_webhook_state.ts, shared/alert_fallback.ts, shared/alert_queue.ts.

-- One row per webhook (`webhook` is a hash of its URL, never the token itself). The bucket is
-- what Discord's `X-RateLimit-*` headers and `429` `retry_after` said, as the fleet spends it:
-- every send first takes one request from `remaining` (internal.alert_webhook_acquire), so any
-- number of instances together stay within it (https://discord.com/developers/docs/topics/rate-limits).
create table if not exists internal.alert_webhooks (
  webhook text primary key,
  -- `X-RateLimit-Bucket`, `-Limit`, and the longest `-Reset-After` seen (the window's length).
  bucket text,
  bucket_limit integer,
  window_ms integer,
  -- Requests the fleet may still send before `reset_at` (null: nothing known yet).
  remaining integer not null default 0,
  reset_at timestamptz,
  -- A global 429 pauses every send until then.
  global_until timestamptz,
  -- 401/403/404 from the webhook: nothing is sent (alerts stay queued) but one probe per
  -- `next_probe_at`, until an answer shows the webhook exists again.
  unusable_since timestamptz,
  unusable_reason text,
  next_probe_at timestamptz,
  -- The first failed delivery (5xx, timeout, unreachable) since the last success.
  failing_since timestamptz,
  last_error text,
  last_sent_at timestamptz,
  rate_limited integer not null default 0,
  updated_at timestamptz not null default now()
);
revoke all on internal.alert_webhooks from public;

-- Takes one request from the webhook's bucket, atomically for the whole fleet. `granted`: send
-- now (`probe`: the webhook is unusable and this is its rare retry). Otherwise `wait_ms` says
-- how long until asking again makes sense, and `unusable_reason` why when the webhook is broken.
-- Unknown limit (first send, or headers never seen): one request at a time, for at most
-- p_unknown_window_ms, until an answer's headers say more.
create or replace function internal.alert_webhook_acquire(
  p_webhook text, p_unknown_window_ms integer, p_probe_every_ms integer)
returns table (granted boolean, probe boolean, wait_ms integer, unusable_reason text)
language plpgsql as $$
declare
  t timestamptz := clock_timestamp();
  w internal.alert_webhooks;
begin
  insert into internal.alert_webhooks (webhook) values (p_webhook) on conflict do nothing;
  select * into w from internal.alert_webhooks a where a.webhook = p_webhook for update;
  if w.unusable_since is not null then
    if w.next_probe_at is null or w.next_probe_at <= t then
      update internal.alert_webhooks a
      set next_probe_at = t + make_interval(secs => p_probe_every_ms / 1000.0), updated_at = t
      where a.webhook = p_webhook;
      return query select true, true, 0, w.unusable_reason;
    else
      return query select false, false,
        ceil(extract(epoch from (w.next_probe_at - t)) * 1000)::integer, w.unusable_reason;
    end if;
    return;
  end if;
  if w.global_until is not null and w.global_until > t then
    return query select false, false,
      ceil(extract(epoch from (w.global_until - t)) * 1000)::integer, null::text;
    return;
  end if;
  if w.reset_at is null or w.reset_at <= t then
    -- A new window: the limit Discord stated, or one request while it is unknown.
    update internal.alert_webhooks a
    set remaining = coalesce(w.bucket_limit, 1) - 1,
        reset_at = t + make_interval(secs => (case when w.bucket_limit is null
          then p_unknown_window_ms else greatest(w.window_ms, 1) end) / 1000.0),
        updated_at = t
    where a.webhook = p_webhook;
    return query select true, false, 0, null::text;
    return;
  end if;
  if w.remaining > 0 then
    update internal.alert_webhooks a set remaining = a.remaining - 1, updated_at = t
    where a.webhook = p_webhook;
    return query select true, false, 0, null::text;
    return;
  end if;
  return query select false, false,
    greatest(1, ceil(extract(epoch from (w.reset_at - t)) * 1000))::integer, null::text;
end;
$$;

-- Records what one send taught: the bucket headers (when the answer had them), a 429's
-- retry_after, and the outcome: 'sent' and 'rejected' (a 4xx about the message) show Discord
-- and the webhook work; 'failed' (5xx, timeout) starts or continues a failing period; 'gone'
-- (401/403/404) marks the webhook unusable for the fleet. Returns the health after it.
create or replace function internal.alert_webhook_observe(
  p_webhook text, p_outcome text, p_bucket text, p_limit integer, p_remaining integer,
  p_reset_after_ms integer, p_retry_after_ms integer, p_global boolean, p_reason text,
  p_probe_every_ms integer)
returns table (failing_since timestamptz, unusable_since timestamptz, became_unusable boolean,
  recovered boolean)
language plpgsql as $$
declare
  t timestamptz := clock_timestamp();
  w internal.alert_webhooks;
  obs_reset timestamptz;
  half interval;
  was_unusable boolean;
begin
  insert into internal.alert_webhooks (webhook) values (p_webhook) on conflict do nothing;
  select * into w from internal.alert_webhooks a where a.webhook = p_webhook for update;
  was_unusable := w.unusable_since is not null;
  if p_remaining is not null and p_reset_after_ms is not null then
    obs_reset := t + make_interval(secs => p_reset_after_ms / 1000.0);
    half := make_interval(secs => greatest(coalesce(w.window_ms, 0), p_reset_after_ms) / 2000.0);
    if w.bucket_limit is null or w.reset_at is null or obs_reset > w.reset_at + half then
      -- First headers, or a window Discord started before ours: take them as they are.
      w.remaining := p_remaining;
      w.reset_at := obs_reset;
    elsif obs_reset >= w.reset_at - half then
      -- The same window: answers of sends in flight arrive in any order; the fleet's own count
      -- (claims not yet seen by Discord) and the latest reset are the safe side.
      w.remaining := least(w.remaining, p_remaining);
      w.reset_at := greatest(w.reset_at, obs_reset);
    end if; -- else: an answer from a window that has ended: nothing to learn.
    w.bucket := coalesce(p_bucket, w.bucket);
    w.bucket_limit := coalesce(p_limit, w.bucket_limit);
    w.window_ms := greatest(coalesce(w.window_ms, 0), p_reset_after_ms);
  elsif w.bucket_limit is null then
    -- The one request allowed while the limit is unknown has its answer: the next may go.
    w.reset_at := null;
  end if;
  if p_outcome = 'rate_limited' then
    w.rate_limited := w.rate_limited + 1;
    if p_global then
      w.global_until := greatest(w.global_until,
        t + make_interval(secs => coalesce(p_retry_after_ms, 1000) / 1000.0));
    else
      w.remaining := 0;
      w.reset_at := greatest(w.reset_at,
        t + make_interval(secs => coalesce(p_retry_after_ms, 1000) / 1000.0));
    end if;
  elsif p_outcome in ('sent', 'rejected') then
    w.failing_since := null;
    w.last_error := case when p_outcome = 'rejected' then p_reason end;
    w.unusable_since := null;
    w.unusable_reason := null;
    w.next_probe_at := null;
    if p_outcome = 'sent' then w.last_sent_at := t; end if;
  elsif p_outcome = 'failed' then
    w.failing_since := coalesce(w.failing_since, t);
    w.last_error := p_reason;
  elsif p_outcome = 'gone' then
    w.unusable_since := coalesce(w.unusable_since, t);
    w.unusable_reason := p_reason;
    w.next_probe_at := t + make_interval(secs => p_probe_every_ms / 1000.0);
  end if;
  update internal.alert_webhooks a set
    bucket = w.bucket, bucket_limit = w.bucket_limit, window_ms = w.window_ms,
    remaining = w.remaining, reset_at = w.reset_at, global_until = w.global_until,
    unusable_since = w.unusable_since, unusable_reason = w.unusable_reason,
    next_probe_at = w.next_probe_at, failing_since = w.failing_since, last_error = w.last_error,
    last_sent_at = w.last_sent_at, rate_limited = w.rate_limited, updated_at = t
  where a.webhook = p_webhook;
  return query select w.failing_since, w.unusable_since,
    (not was_unusable and w.unusable_since is not null),
    (was_unusable and w.unusable_since is null);
end;
$$;

-- Only the functions call these (no API role has usage on `internal` either).
revoke all on function internal.alert_webhook_acquire(text, integer, integer) from public;
revoke all on function internal.alert_webhook_observe(text, text, text, integer, integer, integer,
  integer, boolean, text, integer) from public;

-- The fallback channel's cooldowns: one row per kind ('discord-unusable', 'discord-failing',
-- 'critical:<key>'), claimed atomically so the fleet sends each kind at most once per cooldown.
create table if not exists internal.alert_fallback_sends (
  kind text primary key,
  sent_at timestamptz not null
);
revoke all on internal.alert_fallback_sends from public;

-- Set once a queued critical alert was forwarded to the fallback channel (or found covered by
-- a forward of its kind within the cooldown).
alter table internal.alerts add column if not exists fallback_at timestamptz;

-- Coalescing by one atomic upsert: at most one queued row per dedup key, so
-- `insert … on conflict … do update` counts into it without any lock held across statements.
-- Rows queued by the earlier code could share a key: fold them into the oldest first (its count
-- the sum, its severity the highest).
with ranked as (
  select id, dedup_key, count, priority,
    first_value(id) over (partition by dedup_key order by seq) as keep
  from internal.alerts
  where state = 'queued' and dedup_key is not null
),
folded as (
  select keep, (sum(count) filter (where id <> keep))::int as extra, min(priority) as top
  from ranked group by keep having count(*) > 1
),
bumped as (
  update internal.alerts a
  set count = a.count + f.extra, priority = f.top,
      severity = (array['critical', 'warning', 'info'])[f.top + 1]
  from folded f where a.id = f.keep
  returning a.id
)
delete from internal.alerts a using ranked r
where a.id = r.id and r.id <> r.keep and exists (select 1 from bumped);

create unique index if not exists alerts_queued_dedup on internal.alerts (dedup_key)
  where state = 'queued' and dedup_key is not null;
