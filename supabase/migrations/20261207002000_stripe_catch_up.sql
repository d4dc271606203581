-- payment-webhook's catch-up (functions/payment-webhook/catch_up.ts): events whose webhook never
-- arrived are read back from Stripe's GET /v1/events and applied through the same exactly-once
-- path as a delivered webhook (internal.stripe_event_apply).

-- Who recorded an event: null for a delivered webhook, 'catch-up' for an event the catch-up found
-- missing. The catch-up's recent rows are what status counts (a non-zero count means webhooks are
-- being missed), hence the partial index.
alter table internal.stripe_events add column if not exists via text
  check (via in ('catch-up'));
create index if not exists stripe_events_caught_up
  on internal.stripe_events (received_at) where via = 'catch-up';

-- The catch-up's cursor: one row. Everything Stripe created up to `covered_until` has been read
-- and recorded (the next scan starts an overlap before it). While a scan is under way, its fixed
-- window [scan_from, scan_to] and `scan_after`, the last event id it finished (Stripe's list is
-- newest first; the scan resumes with starting_after = scan_after). `checkpoint_at`: when the row
-- was last written (a run that finds nothing new writes nothing); `version` counts writes, so
-- a run writes only over the state it started from (two runs racing: the later write is skipped,
-- never a cursor moved back).
create table if not exists internal.stripe_catch_up (
  id boolean primary key default true check (id),
  covered_until timestamptz,
  scan_from timestamptz,
  scan_to timestamptz,
  scan_after text,
  checkpoint_at timestamptz not null default now(),
  version bigint not null default 1,
  check ((scan_from is null) = (scan_to is null)),
  check (scan_after is null or scan_to is not null)
);

-- The catch-up's one statement per event: internal.stripe_event_apply (claim, out-of-order
-- guarded effect, outcome), then the row marked as recorded by the catch-up, in the caller's
-- (autocommit) transaction. A duplicate (a webhook or another run was first) changes nothing.
create or replace function internal.stripe_event_catch_up(
  p_id text, p_type text, p_created timestamptz, p_effect jsonb
)
returns table (outcome text, reason text)
language plpgsql as $$
declare
  r record;
begin
  select a.outcome, a.reason into r
    from internal.stripe_event_apply(p_id, p_type, p_created, p_effect) a;
  if r.outcome <> 'duplicate' then
    update internal.stripe_events ev set via = 'catch-up' where ev.id = p_id;
  end if;
  outcome := r.outcome;
  reason := r.reason;
  return next;
end
$$;

-- Every 10 minutes (the contract allows at most every 15): a missed webhook is applied within
-- about ten minutes of Stripe giving up on it or of the endpoint breaking.
select internal.schedule_job('stripe-catch-up', '*/10 * * * *',
  '/functions/v1/payment-webhook/catch-up');
