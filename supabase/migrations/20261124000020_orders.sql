-- broker-order: the idempotency keys of every function (shared/idempotency.ts) and the orders
-- users place. Orders are written only by the function; a user reads only their own rows.

-- Idempotency keys (IETF httpapi Idempotency-Key draft), per scope (function), owner (user) and
-- key. `key_id` names one lifetime of a key: it is kept across take-overs and renewed when an
-- expired key is used again, so anything derived from it (a broker's client_order_id) is stable
-- while the key lives. `lease` names the attempt holding an in-progress key until `locked_until`.
create table if not exists internal.idempotency_keys (
  scope text not null,
  owner text not null,
  key text not null,
  key_id uuid not null,
  fingerprint text not null,
  state text not null default 'in_progress' check (state in ('in_progress', 'completed')),
  attempt int not null default 1,
  lease uuid,
  locked_until timestamptz,
  response_status int,
  response_body text,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  expires_at timestamptz not null,
  primary key (scope, owner, key)
);
create index if not exists idempotency_keys_expires_at on internal.idempotency_keys (expires_at);

-- Claims a key in one round trip. Outcomes:
--   claimed  a new key (or an expired one, which starts a new lifetime): run the request
--   resumed  an earlier attempt left it in progress past its lock (died, or released it): take
--            over and resume from where it stopped
--   replay   completed: answer the stored status and body
--   mismatch the key was used with another request (fingerprint differs)
--   in_use   another attempt holds it; `retry_after_ms` until its lock runs out
-- The row lock serializes claims on one key across instances; the database clock is the only one.
create or replace function internal.idempotency_claim(
  p_scope text, p_owner text, p_key text, p_fingerprint text, p_lease uuid,
  p_lock_ms int, p_ttl_s int
)
returns table (
  outcome text, key_id uuid, attempt int, response_status int, response_body text,
  retry_after_ms int
)
language plpgsql as $$
#variable_conflict use_column
declare
  now_ts timestamptz := clock_timestamp();
  lock_until timestamptz := now_ts + make_interval(secs => p_lock_ms / 1000.0);
  r internal.idempotency_keys%rowtype;
begin
  for i in 1..3 loop
    insert into internal.idempotency_keys as k (
      scope, owner, key, key_id, fingerprint, lease, locked_until, created_at, updated_at,
      expires_at
    ) values (
      p_scope, p_owner, p_key, gen_random_uuid(), p_fingerprint, p_lease, lock_until, now_ts,
      now_ts, now_ts + make_interval(secs => p_ttl_s)
    )
    on conflict on constraint idempotency_keys_pkey do nothing
    returning * into r;
    if found then
      outcome := 'claimed'; key_id := r.key_id; attempt := 1;
      return next; return;
    end if;
    select * into r from internal.idempotency_keys k
      where k.scope = p_scope and k.owner = p_owner and k.key = p_key for update;
    if found then exit; end if;
    -- purged between the insert and the select: try again
  end loop;
  if r.scope is null then
    raise exception 'idempotency key % could not be claimed', p_key using errcode = '40001';
  end if;

  if r.expires_at <= now_ts then
    -- The key's lifetime is over: it names a new request now.
    update internal.idempotency_keys k set
      key_id = gen_random_uuid(), fingerprint = p_fingerprint, state = 'in_progress',
      attempt = 1, lease = p_lease, locked_until = lock_until, response_status = null,
      response_body = null, created_at = now_ts, updated_at = now_ts,
      expires_at = now_ts + make_interval(secs => p_ttl_s)
    where k.scope = p_scope and k.owner = p_owner and k.key = p_key
    returning * into r;
    outcome := 'claimed'; key_id := r.key_id; attempt := 1;
    return next; return;
  end if;

  if r.fingerprint <> p_fingerprint then
    outcome := 'mismatch';
    return next; return;
  end if;

  if r.state = 'completed' then
    outcome := 'replay'; response_status := r.response_status; response_body := r.response_body;
    return next; return;
  end if;

  if r.locked_until > now_ts then
    outcome := 'in_use';
    retry_after_ms := ceil(extract(epoch from (r.locked_until - now_ts)) * 1000)::int;
    return next; return;
  end if;

  update internal.idempotency_keys k set
    attempt = k.attempt + 1, lease = p_lease, locked_until = lock_until, updated_at = now_ts
  where k.scope = p_scope and k.owner = p_owner and k.key = p_key
  returning * into r;
  outcome := 'resumed'; key_id := r.key_id; attempt := r.attempt;
  return next;
end
$$;

-- Deletes up to p_limit expired keys; safe from any number of instances at once (rows another
-- purge or a claim holds are skipped, not waited for). Returns how many it deleted.
create or replace function internal.idempotency_purge(p_limit int)
returns int language sql as $$
  with doomed as (
    select scope, owner, key from internal.idempotency_keys
    where expires_at < clock_timestamp()
    order by expires_at
    limit p_limit
    for update skip locked
  ), gone as (
    delete from internal.idempotency_keys k using doomed d
    where k.scope = d.scope and k.owner = d.owner and k.key = d.key
      and k.expires_at < clock_timestamp()
    returning 1
  ) select count(*)::int from gone
$$;

-- Orders: the contract's columns, plus the note and the broker's reason for a rejection.
create table if not exists public.orders (
  id uuid primary key,
  user_id uuid not null,
  client_order_id text not null unique check (char_length(client_order_id) <= 48),
  broker_order_id text,
  symbol text not null check (symbol ~ '^[A-Z][A-Z.]{0,9}$'),
  side text not null check (side in ('buy', 'sell')),
  type text not null check (type in ('market', 'limit', 'stop', 'stop_limit')),
  qty numeric(20, 9) check (qty > 0),
  notional numeric(20, 9) check (notional > 0),
  limit_price numeric(20, 9) check (limit_price > 0),
  stop_price numeric(20, 9) check (stop_price > 0),
  time_in_force text not null check (time_in_force in ('day', 'gtc', 'ioc', 'fok', 'opg', 'cls')),
  note text check (char_length(note) <= 500),
  status text not null,
  reject_reason text,
  created_at timestamptz not null default clock_timestamp(),
  updated_at timestamptz not null default clock_timestamp(),
  check ((qty is null) <> (notional is null))
);
-- The function's listing (newest first, keyset pagination) and the RLS filter.
create index if not exists orders_user_created on public.orders (user_id, created_at desc, id desc);

-- Row-level security: a user reads only their own orders; only the function writes (it connects
-- as the table owner). `(select auth.uid())` is evaluated once per statement, not per row
-- (Supabase, "RLS performance recommendations").
alter table public.orders enable row level security;
drop policy if exists orders_select_own on public.orders;
create policy orders_select_own on public.orders
  for select to authenticated
  using (user_id = (select auth.uid()));
-- Supabase grants every API role all privileges on new public tables by default: take them back.
revoke all on public.orders from anon, authenticated, service_role;
grant select on public.orders to authenticated;
