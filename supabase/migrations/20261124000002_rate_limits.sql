-- Rate limits shared by every instance: a sliding window kept as 60 sub-buckets per key (bucket
-- ids and their hit counts), checked and updated in one round trip by one function. Idle keys are
-- purged by a (rare) sequential scan: an index on updated_at would cost every hit an index write. The oldest
-- bucket counts in full even where it has partly left the window, so the limit is exact or
-- stricter, never looser, and the state stays small whatever the quota.
create table if not exists internal.rate_limits (
  key text primary key,
  buckets bigint[] not null default '{}',
  counts int[] not null default '{}',
  updated_at timestamptz not null default now()
) with (fillfactor = 70); -- room for HOT updates: a hit rewrites its row in place, no index churn

-- Whether this hit is allowed, the quota left, and ms until the oldest counted bucket leaves the
-- window (when a slot frees up). The row lock serializes hits on one key across instances; the
-- database clock is the only clock. Buckets are kept in ascending order, so expiry is a slice.
create or replace function internal.rate_limit_hit(p_key text, p_quota int, p_window_ms int)
returns table (allowed boolean, remaining int, reset_ms int)
language plpgsql as $$
declare
  now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
  width bigint := greatest(p_window_ms / 60, 1);
  cur bigint := now_ms / width;
  span bigint := (p_window_ms + width - 1) / width;
  b bigint[];
  c int[];
  n int;
  keep int := 0;
  total int := 0;
begin
  -- A hit lost in a crash only forgets one request: not worth waiting for the WAL flush.
  perform set_config('synchronous_commit', 'off', true);
  select r.buckets, r.counts into b, c from internal.rate_limits r where r.key = p_key for update;
  if not found then
    insert into internal.rate_limits (key, buckets, counts) values (p_key, array[cur], array[1])
      on conflict (key) do nothing;
    if found then
      allowed := true;
      remaining := p_quota - 1;
      reset_ms := ((cur + span) * width - now_ms)::int;
      return next;
      return;
    end if;
    -- Another instance created the key in between: count on its row.
    select r.buckets, r.counts into b, c from internal.rate_limits r where r.key = p_key for update;
  end if;
  n := coalesce(array_length(b, 1), 0);
  for i in 1 .. n loop
    if b[i] > cur - span then
      if keep = 0 then keep := i; end if;
      total := total + c[i];
    end if;
  end loop;
  if keep = 0 then
    b := '{}';
    c := '{}';
  elsif keep > 1 then
    b := b[keep:n];
    c := c[keep:n];
  end if;
  allowed := total < p_quota;
  if allowed then
    total := total + 1;
    n := coalesce(array_length(b, 1), 0);
    if n > 0 and b[n] = cur then
      c[n] := c[n] + 1;
    else
      b := b || cur;
      c := c || 1;
    end if;
  end if;
  update internal.rate_limits set buckets = b, counts = c, updated_at = clock_timestamp()
    where key = p_key;
  remaining := greatest(p_quota - total, 0);
  reset_ms := greatest((coalesce(b[1], cur) + span) * width - now_ms, 0)::int;
  return next;
end
$$;

-- Keys of one policy idle for longer than its window hold nothing; any instance may drop them.
create or replace function internal.rate_limits_purge(p_prefix text, p_window_ms int, p_batch int)
returns int language sql as $$
  with gone as (
    delete from internal.rate_limits
    where key in (
      select key from internal.rate_limits
      where key like p_prefix || '%'
        and updated_at < clock_timestamp() - make_interval(secs => p_window_ms / 1000.0)
      limit p_batch
      for update skip locked
    )
    returning 1
  ) select count(*)::int from gone
$$;
