-- Rate limits shared by every instance: an exact sliding log per key (the times of the last
-- `quota` hits within the window), checked and updated in one round trip by one function.
create table if not exists internal.rate_limits (
  key text primary key,
  hits timestamptz[] not null default '{}',
  updated_at timestamptz not null default now()
);
create index if not exists rate_limits_updated_at on internal.rate_limits (updated_at);

-- Returns whether this hit is allowed, the quota left, and ms until a slot frees up. The row
-- lock serializes hits on one key across instances; the database clock is the only clock.
create or replace function internal.rate_limit_hit(p_key text, p_quota int, p_window_ms int)
returns table (allowed boolean, remaining int, reset_ms int)
language plpgsql as $$
declare
  now_ts timestamptz := clock_timestamp();
  since timestamptz := now_ts - make_interval(secs => p_window_ms / 1000.0);
  log timestamptz[];
begin
  insert into internal.rate_limits as r (key) values (p_key) on conflict (key) do nothing;
  select array(select x from unnest(r.hits) x where x > since order by x)
    into log from internal.rate_limits r where r.key = p_key for update;
  allowed := coalesce(cardinality(log), 0) < p_quota;
  if allowed then
    log := log || now_ts;
  end if;
  update internal.rate_limits set hits = log, updated_at = now_ts where key = p_key;
  remaining := greatest(p_quota - cardinality(log), 0);
  reset_ms := ceil(greatest(extract(epoch from (log[1] - since)) * 1000, 0))::int;
  return next;
end
$$;

-- Keys idle for longer than any window are dropped by a purge any instance may run.
create or replace function internal.rate_limits_purge(p_older_than_ms int)
returns int language sql as $$
  with gone as (
    delete from internal.rate_limits
    where updated_at < clock_timestamp() - make_interval(secs => p_older_than_ms / 1000.0)
    returning 1
  ) select count(*)::int from gone
$$;
