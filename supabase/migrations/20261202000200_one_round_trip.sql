-- One round trip per step: the database is never on loopback on the platform, so each step of a
-- request that needs the database is one statement (issue 13). Same guarantees as the statements
-- they replace: the same row locks, the same out-of-order guards, one transaction each.

-- broker-order, step 1: the per-user rate-limit hit and the idempotency claim in one call. A hit
-- over quota claims nothing ('limited').
--
-- Locks are held until the commit, so the order matters when many requests of one user and key
-- arrive at once: the key is first read without a lock, and a key whose answer is already
-- decided by what is committed (completed: 'replay'; another request: 'mismatch'; held by a live
-- attempt: 'in_use') is answered after the hit, which then holds the user's rate-limit row only
-- until the commit right after it. Only a key to write (new, expired, or taken over) goes through
-- internal.idempotency_claim with its row lock, after the hit.
--
-- The hit alone commits asynchronously (rate_limit_hit turns synchronous_commit off: a lost hit
-- only forgets one request); a claim that wrote the key ('claimed', 'resumed') must survive a
-- crash (at most one broker order per key), so then the session's setting is put back.
create or replace function internal.idempotency_claim_limited(
  p_rl_key text, p_quota int, p_window_ms int,
  p_scope text, p_owner text, p_key text, p_fingerprint text, p_lease uuid,
  p_lock_ms int, p_ttl_s int
)
returns table (
  allowed boolean, remaining int, reset_ms int,
  outcome text, key_id uuid, attempt int, response_status int, response_body text,
  retry_after_ms int
)
language plpgsql as $$
declare
  sync text := current_setting('synchronous_commit');
  now_ts timestamptz := clock_timestamp();
  k internal.idempotency_keys%rowtype;
  decided text;
  h record;
  c record;
begin
  select * into k from internal.idempotency_keys ik
    where ik.scope = p_scope and ik.owner = p_owner and ik.key = p_key;
  if found and k.expires_at > now_ts then
    if k.fingerprint <> p_fingerprint then
      decided := 'mismatch';
    elsif k.state = 'completed' then
      decided := 'replay';
    elsif k.locked_until > now_ts then
      decided := 'in_use';
    end if;
  end if;

  select * into h from internal.rate_limit_hit(p_rl_key, p_quota, p_window_ms);
  allowed := h.allowed;
  remaining := h.remaining;
  reset_ms := h.reset_ms;
  if not h.allowed then
    outcome := 'limited';
    return next;
    return;
  end if;

  if decided is not null then
    outcome := decided;
    if decided = 'replay' then
      response_status := k.response_status;
      response_body := k.response_body;
    elsif decided = 'in_use' then
      retry_after_ms := ceil(extract(epoch from (k.locked_until - now_ts)) * 1000)::int;
    end if;
    return next;
    return;
  end if;

  select * into c from internal.idempotency_claim(
    p_scope, p_owner, p_key, p_fingerprint, p_lease, p_lock_ms, p_ttl_s);
  if c.outcome in ('claimed', 'resumed') then
    perform set_config('synchronous_commit', sync, true);
  end if;
  outcome := c.outcome;
  key_id := c.key_id;
  attempt := c.attempt;
  response_status := c.response_status;
  response_body := c.response_body;
  retry_after_ms := c.retry_after_ms;
  return next;
end
$$;

-- broker-order, step 2: the order row (or the update of the one an earlier attempt left pending)
-- and the settling of the key, in one call. p_settle 'complete' stores the answer to replay:
-- p_status and p_body, or (p_body null) 201 with the order as the API shows it; 'release' hands
-- the key to the next retry. A lost lease (another attempt took over) raises SQLSTATE IK409 and
-- nothing is written. Returns the order as the API shows it (json, keys in the API's order).
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
    time_in_force text, note text, status text, reject_reason text);
  insert into public.orders as t (id, user_id, client_order_id, broker_order_id, symbol, side,
    type, qty, notional, limit_price, stop_price, time_in_force, note, status, reject_reason)
  values (o.id, o.user_id, o.client_order_id, o.broker_order_id, o.symbol, o.side, o.type,
    o.qty, o.notional, o.limit_price, o.stop_price, o.time_in_force, o.note, o.status,
    o.reject_reason)
  on conflict (client_order_id) do update set
    broker_order_id = coalesce(excluded.broker_order_id, t.broker_order_id),
    status = excluded.status, reject_reason = excluded.reject_reason,
    updated_at = clock_timestamp()
  where t.user_id = excluded.user_id
  returning * into r;
  if not found then
    raise exception 'client_order_id belongs to another user';
  end if;
  body := json_build_object(
    'id', r.id, 'clientOrderId', r.client_order_id, 'brokerOrderId', r.broker_order_id,
    'status', r.status, 'symbol', r.symbol, 'side', r.side, 'type', r.type,
    'qty', trim_scale(r.qty)::text, 'notional', trim_scale(r.notional)::text,
    'limitPrice', trim_scale(r.limit_price)::text, 'stopPrice', trim_scale(r.stop_price)::text,
    'timeInForce', r.time_in_force, 'note', r.note,
    'createdAt', to_char(r.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
  )::text;
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

-- payment-webhook: claims a Stripe event id, applies its effect and records the outcome in one
-- call, so the caller's transaction holds all three. p_effect is the validated effect, decided by
-- the function (functions/payment-webhook/effects.ts):
--   {"kind": "ignored", "reason"}
--   {"kind": "checkout", "user", "session", "payment_intent", "customer", "amount_total",
--    "currency", "status", "rank"}
--   {"kind": "purchase_status", "payment_intent", "status", "rank"}
--   {"kind": "subscription", "id", "customer", "status", "current_period_end",
--    "metadata_user", "rank"}
-- An older event never overwrites state written from a newer one: each row keeps the created time
-- and rank of the event its state came from (Stripe does not guarantee order:
-- https://docs.stripe.com/webhooks#event-ordering). A concurrent delivery of the same id waits on
-- the uncommitted primary key, then finds it ('duplicate') or, if the first rolled back, applies.
-- Returns ('duplicate', null), ('applied', null) or ('ignored', reason).
create or replace function internal.stripe_event_apply(
  p_id text, p_type text, p_created timestamptz, p_effect jsonb
)
returns table (outcome text, reason text)
language plpgsql as $$
#variable_conflict use_column
declare
  e jsonb := p_effect;
  kind text := p_effect ->> 'kind';
  v_at timestamptz := p_created;
  v_rank smallint := (p_effect ->> 'rank')::smallint;
  v_owner uuid;
  n int;
begin
  insert into internal.stripe_events (id, type, event_created) values (p_id, p_type, p_created)
    on conflict (id) do nothing;
  get diagnostics n = row_count;
  if n = 0 then
    outcome := 'duplicate';
    return next;
    return;
  end if;

  outcome := 'applied';
  if kind = 'ignored' then
    outcome := 'ignored';
    reason := e ->> 'reason';
  elsif kind = 'checkout' then
    insert into public.purchases as p (user_id, stripe_checkout_session_id,
      stripe_payment_intent_id, stripe_customer_id, amount_total, currency, status,
      stripe_state_at, stripe_state_rank)
    values ((e ->> 'user')::uuid, e ->> 'session', e ->> 'payment_intent', e ->> 'customer',
      (e ->> 'amount_total')::bigint, e ->> 'currency', e ->> 'status', v_at, v_rank)
    on conflict (stripe_checkout_session_id) do update set
      status = excluded.status, stripe_state_at = excluded.stripe_state_at,
      stripe_state_rank = excluded.stripe_state_rank, updated_at = now()
    where (p.stripe_state_at, p.stripe_state_rank)
      <= (excluded.stripe_state_at, excluded.stripe_state_rank);
    get diagnostics n = row_count;
    if e ->> 'customer' is not null then
      -- A Stripe customer belongs to the user who first checked out with it.
      insert into internal.stripe_customers (customer_id, user_id)
        values (e ->> 'customer', (e ->> 'user')::uuid)
        on conflict (customer_id) do nothing;
    end if;
    if n = 0 then
      outcome := 'ignored';
      reason := 'a newer event already set this purchase''s state';
    end if;
  elsif kind = 'purchase_status' then
    update public.purchases p set status = e ->> 'status', stripe_state_at = v_at,
      stripe_state_rank = v_rank, updated_at = now()
    where p.stripe_payment_intent_id = e ->> 'payment_intent'
      and (p.stripe_state_at, p.stripe_state_rank) <= (v_at, v_rank);
    get diagnostics n = row_count;
    if n = 0 then
      outcome := 'ignored';
      if exists (select 1 from public.purchases p
                 where p.stripe_payment_intent_id = e ->> 'payment_intent') then
        reason := 'a newer event already set this purchase''s state';
      else
        reason := 'no purchase for payment_intent ' || (e ->> 'payment_intent');
      end if;
    end if;
  elsif kind = 'subscription' then
    -- The user: the subscription's own metadata, else the row we already have, else whoever
    -- checked out as this customer.
    v_owner := coalesce(
      (e ->> 'metadata_user')::uuid,
      (select s.user_id from public.subscriptions s where s.stripe_subscription_id = e ->> 'id'),
      (select c.user_id from internal.stripe_customers c where c.customer_id = e ->> 'customer'));
    if v_owner is null then
      outcome := 'ignored';
      reason := 'no user for subscription ' || (e ->> 'id') || ' (customer '
        || coalesce(e ->> 'customer', 'unknown') || ')';
    else
      insert into public.subscriptions as s (stripe_subscription_id, user_id,
        stripe_customer_id, status, current_period_end, stripe_state_at, stripe_state_rank)
      values (e ->> 'id', v_owner, e ->> 'customer', e ->> 'status',
        (e ->> 'current_period_end')::timestamptz, v_at, v_rank)
      on conflict (stripe_subscription_id) do update set
        status = excluded.status,
        current_period_end = coalesce(excluded.current_period_end, s.current_period_end),
        stripe_customer_id = coalesce(s.stripe_customer_id, excluded.stripe_customer_id),
        stripe_state_at = excluded.stripe_state_at,
        stripe_state_rank = excluded.stripe_state_rank, updated_at = now()
      where (s.stripe_state_at, s.stripe_state_rank)
        <= (excluded.stripe_state_at, excluded.stripe_state_rank);
      get diagnostics n = row_count;
      if n = 0 then
        outcome := 'ignored';
        reason := 'a newer event already set this subscription''s state';
      end if;
    end if;
  else
    raise exception 'stripe_event_apply: unknown effect kind %', kind;
  end if;

  update internal.stripe_events ev set outcome = stripe_event_apply.outcome,
    reason = left(stripe_event_apply.reason, 500)
  where ev.id = p_id;
  return next;
end
$$;
