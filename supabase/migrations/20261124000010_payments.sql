-- payment-webhook: Stripe events applied exactly once, and the purchases and subscriptions they
-- produce. Only the function writes; a user reads their own rows through RLS.

-- Every Stripe event id seen, recorded in the same transaction as its effect (shared/webhook_dedup.ts).
-- The primary key is what makes concurrent deliveries of one event wait for each other. Kept for
-- WEBHOOK_RETENTION_DAYS (30): Stripe retries for 3 days and events can be re-sent by hand for 30
-- (https://docs.stripe.com/webhooks#retries).
create table if not exists internal.stripe_events (
  id text primary key,
  type text not null,
  -- event.created: when Stripe created the event (not when we received it).
  event_created timestamptz,
  received_at timestamptz not null default now(),
  -- Set before the claiming transaction commits: applied, or ignored with the reason.
  outcome text check (outcome in ('applied', 'ignored')),
  reason text
);
create index if not exists stripe_events_received_at on internal.stripe_events (received_at);

-- Which user a Stripe customer belongs to, learned from completed Checkout Sessions, so that
-- subscription and invoice events (which name only the customer) can be tied to the user.
create table if not exists internal.stripe_customers (
  customer_id text primary key,
  user_id uuid not null,
  created_at timestamptz not null default now()
);

-- One row per completed Checkout Session. `stripe_state_at` / `stripe_state_rank` are the
-- event.created and status rank of the state stored: Stripe does not guarantee event order
-- (https://docs.stripe.com/webhooks#event-ordering), so an older event never overwrites it.
create table if not exists public.purchases (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  stripe_checkout_session_id text not null unique,
  stripe_payment_intent_id text,
  stripe_customer_id text,
  amount_total bigint, -- in the currency's smallest unit, as Stripe gives it
  currency text,
  status text not null
    check (status in ('pending', 'paid', 'failed', 'partially_refunded', 'refunded')),
  stripe_state_at timestamptz not null,
  stripe_state_rank smallint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists purchases_user_created on public.purchases (user_id, created_at desc);
create index if not exists purchases_payment_intent on public.purchases (stripe_payment_intent_id);

-- One row per Stripe subscription, with Stripe's own status values.
create table if not exists public.subscriptions (
  stripe_subscription_id text primary key,
  user_id uuid not null,
  stripe_customer_id text,
  status text not null,
  current_period_end timestamptz,
  stripe_state_at timestamptz not null,
  stripe_state_rank smallint not null,
  updated_at timestamptz not null default now()
);
create index if not exists subscriptions_user on public.subscriptions (user_id);

alter table public.purchases enable row level security;
alter table public.subscriptions enable row level security;
drop policy if exists purchases_read_own on public.purchases;
create policy purchases_read_own on public.purchases
  for select to authenticated using (user_id = auth.uid());
drop policy if exists subscriptions_read_own on public.subscriptions;
create policy subscriptions_read_own on public.subscriptions
  for select to authenticated using (user_id = auth.uid());
revoke all on public.purchases, public.subscriptions from anon, authenticated;
grant select on public.purchases, public.subscriptions to authenticated;
