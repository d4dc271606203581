-- Rate limits shared by every instance: a sliding window kept as 60 sub-buckets per key (bucket
-- ids and their hit counts), checked and updated in one round trip by one function. The oldest
-- bucket counts in full even where it has partly left the window, so the limit is exact or
-- stricter, never looser, and the state stays small whatever the quota.
create table if not exists internal.rate_limits (
  key text primary key,
  buckets bigint[] not null default '{}',
  counts int[] not null default '{}',
  updated_at timestamptz not null default now()
);
create index if not exists rate_limits_updated_at on internal.rate_limits (updated_at);

-- Whether this hit is allowed, the quota left, and ms until the oldest counted bucket leaves the
-- window (when a slot frees up). The row lock serializes hits on one key across instances; the
-- database clock is the only clock.
create or replace function internal.rate_limit_hit(p_key text, p_quota int, p_window_ms int)
returns table (allowed boolean, remaining int, reset_ms int)
language plpgsql as $$
declare
  now_ms bigint := floor(extract(epoch from clock_timestamp()) * 1000);
  width bigint := greatest(p_window_ms / 60, 1);
  cur bigint := now_ms / width;
  oldest bigint := cur - (p_window_ms + width - 1) / width + 1;
  b bigint[];
  c int[];
  total int := 0;
  i int;
begin
  insert into internal.rate_limits as r (key) values (p_key) on conflict (key) do nothing;
  select r.buckets, r.counts into b, c from internal.rate_limits r where r.key = p_key for update;
  -- Keep only the buckets still inside the window.
  for i in 1 .. coalesce(array_length(b, 1), 0) loop
    if b[i] >= oldest then
      total := total + c[i];
    end if;
  end loop;
  select coalesce(array_agg(x.bk order by x.bk), '{}'), coalesce(array_agg(x.ct order by x.bk), '{}')
    into b, c from unnest(b, c) as x(bk, ct) where x.bk >= oldest;
  allowed := total < p_quota;
  if allowed then
    total := total + 1;
    if coalesce(b[array_length(b, 1)], -1) = cur then
      c[array_length(c, 1)] := c[array_length(c, 1)] + 1;
    else
      b := b || cur;
      c := c || 1;
    end if;
  end if;
  update internal.rate_limits set buckets = b, counts = c, updated_at = clock_timestamp() where key = p_key;
  remaining := greatest(p_quota - total, 0);
  reset_ms := greatest((coalesce(b[1], cur) + (p_window_ms + width - 1) / width) * width - now_ms, 0)::int;
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
