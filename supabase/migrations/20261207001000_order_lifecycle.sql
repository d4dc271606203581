-- Order lifecycle (issue 23): an order follows the broker after it is placed, and its owner can
-- cancel it. The row gains the broker's fill and close fields and the broker's own `updated_at`
-- (the ordering every later answer is compared with); the API's shape of an order is defined
-- once (internal.order_json); the broker-read budget shared by every instance is a sliding window
-- in internal.rate_limits that a sync run reserves in one statement and gives back in another.

alter table public.orders
  add column if not exists filled_qty numeric not null default 0 check (filled_qty >= 0),
  add column if not exists filled_avg_price numeric check (filled_avg_price > 0),
  add column if not exists filled_at timestamptz,
  add column if not exists canceled_at timestamptz,
  add column if not exists expired_at timestamptz,
  -- The broker's `updated_at` of the state stored: an answer at or before it changes nothing.
  add column if not exists broker_updated_at timestamptz;

-- The sync reads the open orders (everything not terminal) of all users: a partial index keeps
-- that read small however many closed orders accumulate.
create index if not exists orders_open on public.orders (created_at)
  where status not in ('filled', 'canceled', 'expired', 'rejected', 'replaced', 'not_placed');

-- Terminal statuses: once an order has one, nothing changes it (except a retry of its own key
-- submitting a `not_placed` order once, through internal.order_record).
create or replace function internal.order_terminal(p_status text) returns boolean
language sql immutable as $$
  select p_status in ('filled', 'canceled', 'expired', 'rejected', 'replaced', 'not_placed')
$$;

-- The order as the API answers it: one definition for the list, one order, POST and DELETE.
-- Decimals as text without trailing zeros, times in UTC to the microsecond.
create or replace function internal.order_json(r public.orders) returns json
language sql stable as $$
  select json_build_object(
    'id', r.id, 'clientOrderId', r.client_order_id, 'brokerOrderId', r.broker_order_id,
    'status', r.status, 'symbol', r.symbol, 'side', r.side, 'type', r.type,
    'qty', trim_scale(r.qty)::text, 'notional', trim_scale(r.notional)::text,
    'limitPrice', trim_scale(r.limit_price)::text, 'stopPrice', trim_scale(r.stop_price)::text,
    'timeInForce', r.time_in_force, 'note', r.note,
    'filledQty', trim_scale(r.filled_qty)::text,
    'filledAvgPrice', trim_scale(r.filled_avg_price)::text,
    'filledAt', to_char(r.filled_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'canceledAt', to_char(r.canceled_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'expiredAt', to_char(r.expired_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'rejectReason', r.reject_reason,
    'createdAt', to_char(r.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updatedAt', to_char(r.updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
  )
$$;

-- broker-order, step 2 (replaces 20261202000200's): the order row and the settling of its key in
-- one call, now with the broker's fill fields, answering the full shape. An existing row (the
-- one an earlier attempt left) is updated only while it is `pending_confirmation` or
-- `not_placed`; a row the sync already moved on keeps its state unless this answer is newer by
-- the broker's updated_at, and a terminal row never changes.
create or replace function internal.order_record(
  p_order jsonb, p_settle text, p_scope text, p_owner text, p_key text, p_lease uuid,
  p_status int, p_body text
)
returns text
language plpgsql as $$
declare
  o record;
  r public.orders%rowtype;
  body text;
  n int;
begin
  select * into o from jsonb_to_record(p_order) as x(
    id uuid, user_id uuid, client_order_id text, broker_order_id text, symbol text, side text,
    type text, qty numeric, notional numeric, limit_price numeric, stop_price numeric,
    time_in_force text, note text, status text, reject_reason text, filled_qty numeric,
    filled_avg_price numeric, filled_at timestamptz, canceled_at timestamptz,
    expired_at timestamptz, broker_updated_at timestamptz);
  insert into public.orders as t (id, user_id, client_order_id, broker_order_id, symbol, side,
    type, qty, notional, limit_price, stop_price, time_in_force, note, status, reject_reason,
    filled_qty, filled_avg_price, filled_at, canceled_at, expired_at, broker_updated_at)
  values (o.id, o.user_id, o.client_order_id, o.broker_order_id, o.symbol, o.side, o.type,
    o.qty, o.notional, o.limit_price, o.stop_price, o.time_in_force, o.note, o.status,
    o.reject_reason, coalesce(o.filled_qty, 0), o.filled_avg_price, o.filled_at,
    o.canceled_at, o.expired_at, o.broker_updated_at)
  on conflict (client_order_id) do update set
    broker_order_id = coalesce(excluded.broker_order_id, t.broker_order_id),
    status = case when t.status in ('pending_confirmation', 'not_placed')
      or (not internal.order_terminal(t.status) and excluded.broker_updated_at is not null
        and excluded.filled_qty >= t.filled_qty
        and (t.broker_updated_at is null or excluded.broker_updated_at > t.broker_updated_at))
      then excluded.status else t.status end,
    reject_reason = coalesce(excluded.reject_reason, t.reject_reason),
    filled_qty = greatest(t.filled_qty, excluded.filled_qty),
    filled_avg_price = case when excluded.filled_qty > t.filled_qty
      then excluded.filled_avg_price else t.filled_avg_price end,
    filled_at = coalesce(t.filled_at, excluded.filled_at),
    canceled_at = coalesce(t.canceled_at, excluded.canceled_at),
    expired_at = coalesce(t.expired_at, excluded.expired_at),
    broker_updated_at = greatest(t.broker_updated_at, excluded.broker_updated_at),
    updated_at = clock_timestamp()
  where t.user_id = excluded.user_id
  returning * into r;
  if not found then
    raise exception 'client_order_id belongs to another user';
  end if;
  body := internal.order_json(r)::text;
  if p_settle = 'complete' then
    update internal.idempotency_keys k set state = 'completed',
      response_status = coalesce(p_status, 201), response_body = coalesce(p_body, body),
      lease = null, locked_until = null, updated_at = clock_timestamp()
    where k.scope = p_scope and k.owner = p_owner and k.key = p_key and k.lease = p_lease
      and k.state = 'in_progress';
  elsif p_settle = 'release' then
    update internal.idempotency_keys k set lease = null, locked_until = clock_timestamp(),
      updated_at = clock_timestamp()
    where k.scope = p_scope and k.owner = p_owner and k.key = p_key and k.lease = p_lease
      and k.state = 'in_progress';
  else
    raise exception 'order_record: p_settle must be complete or release, got %', p_settle;
  end if;
  get diagnostics n = row_count;
  if n = 0 then
    raise exception 'idempotency key % was taken over by a later attempt', p_key
      using errcode = 'IK409';
  end if;
  return body;
end
$$;

-- Takes up to p_want units of a sliding-window budget (the same window and table as
-- internal.rate_limit_hit, so hits and takes of one key share it): what is granted never brings
-- the window over p_quota, whatever other instances take at the same time (the row lock).
-- Returns how many were granted and the ms until the oldest counted unit leaves the window.
create or replace function internal.rate_limit_take(
  p_key text, p_quota int, p_window_ms int, p_want int
)
returns table (granted int, reset_ms int)
language plpgsql as $$
declare
  now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
  width bigint := greatest(p_window_ms / 60, 1);
  cur bigint := now_ms / width;
  span bigint := (p_window_ms + width - 1) / width;
  b bigint[];
  c int[];
  n int;
  total int := 0;
  nb bigint[] := '{}';
  nc int[] := '{}';
begin
  insert into internal.rate_limits (key, buckets, counts) values (p_key, '{}', '{}')
    on conflict (key) do nothing;
  select r.buckets, r.counts into b, c from internal.rate_limits r where r.key = p_key for update;
  n := coalesce(array_length(b, 1), 0);
  for i in 1 .. n loop
    if b[i] > cur - span then
      nb := nb || b[i];
      nc := nc || c[i];
      total := total + c[i];
    end if;
  end loop;
  granted := greatest(least(p_want, p_quota - total), 0);
  if granted > 0 then
    n := coalesce(array_length(nb, 1), 0);
    if n > 0 and nb[n] = cur then
      nc[n] := nc[n] + granted;
    else
      nb := nb || cur;
      nc := nc || granted;
    end if;
  end if;
  update internal.rate_limits set buckets = nb, counts = nc, updated_at = clock_timestamp()
    where key = p_key;
  reset_ms := greatest((coalesce(nb[1], cur) + span) * width - now_ms, 0)::int;
  return next;
end
$$;

-- Gives back p_n units taken by internal.rate_limit_take and not used, newest buckets first.
create or replace function internal.rate_limit_give_back(p_key text, p_n int)
returns int
language plpgsql as $$
declare
  b bigint[];
  c int[];
  left_n int := p_n;
  take int;
begin
  if p_n <= 0 then return 0; end if;
  select r.buckets, r.counts into b, c from internal.rate_limits r where r.key = p_key for update;
  if not found then return 0; end if;
  for i in reverse coalesce(array_length(c, 1), 0) .. 1 loop
    exit when left_n = 0;
    take := least(c[i], left_n);
    c[i] := c[i] - take;
    left_n := left_n - take;
  end loop;
  update internal.rate_limits set counts = c, updated_at = clock_timestamp() where key = p_key;
  return p_n - left_n;
end
$$;

-- Realtime: where the project has the supabase_realtime publication (every Supabase project),
-- orders are in it, so a frontend subscribed with supabase-js sees its own orders change (RLS
-- applies to what Realtime sends). Elsewhere (plain Postgres, PGlite) nothing happens.
do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
    and not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
      and schemaname = 'public' and tablename = 'orders') then
    alter publication supabase_realtime add table public.orders;
  end if;
end
$$;

-- The order sync, every minute (internal.schedule_job: pg_cron + pg_net where they exist; the
-- local server runs every row of internal.scheduled_jobs itself).
select internal.schedule_job('broker-order-sync', '* * * * *', '/functions/v1/broker-order/sync');

-- DELETE /broker-order/{id}, step 1, one call: the user's hit on the "orders" rate limit, their
-- order, and (only for an order the broker may still cancel) the broker-read budget for the
-- cancel and its read-back. Nothing is taken from the budget for a limited caller, an unknown or
-- another user's id, or a closed order.
create or replace function internal.order_cancel_begin(
  p_rl_key text, p_quota int, p_window_ms int,
  p_budget_key text, p_budget_quota int, p_budget_window_ms int, p_budget_want int,
  p_user uuid, p_id uuid
)
returns table (
  allowed boolean, remaining int, reset_ms int, order_found boolean, status text,
  broker_order_id text, order_json text, granted int, budget_reset_ms int
)
language plpgsql as $$
#variable_conflict use_column
declare
  h record;
  r public.orders%rowtype;
  t record;
begin
  select * into h from internal.rate_limit_hit(p_rl_key, p_quota, p_window_ms);
  allowed := h.allowed;
  remaining := h.remaining;
  reset_ms := h.reset_ms;
  order_found := false;
  granted := 0;
  if not h.allowed then
    return next;
    return;
  end if;
  select * into r from public.orders o where o.id = p_id and o.user_id = p_user;
  if r.id is null then
    return next;
    return;
  end if;
  order_found := true;
  status := r.status;
  broker_order_id := r.broker_order_id;
  order_json := internal.order_json(r)::text;
  if not internal.order_terminal(r.status) and r.broker_order_id is not null then
    select * into t from internal.rate_limit_take(p_budget_key, p_budget_quota,
      p_budget_window_ms, p_budget_want);
    granted := t.granted;
    budget_reset_ms := t.reset_ms;
  end if;
  return next;
end
$$;
