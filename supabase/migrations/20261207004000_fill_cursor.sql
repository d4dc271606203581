-- The order sync's cursor in the broker's feed of fills (GET /v2/account/activities/FILL,
-- functions/broker-order/sync.ts): the last activity the sync applied, per broker account (the
-- key of the account's request budget). A run pages the feed from here (page_token = activity_id,
-- direction=asc) and moves it on only in the statement that applies the fills it read
-- (functions/broker-order/lifecycle_repository.ts), never backwards: Alpaca's activity ids are
-- the transaction time (17 digits) then `::` and a uuid, so their byte order is the feed's order.
create table if not exists internal.broker_fill_cursors (
  key text primary key,
  activity_id text not null check (length(activity_id) between 1 and 200),
  transaction_time timestamptz not null,
  updated_at timestamptz not null default now()
);

-- The statement that applies the feed's fills finds each fill's order by the broker's id.
create index if not exists orders_broker_order_id on public.orders (broker_order_id)
  where broker_order_id is not null;
