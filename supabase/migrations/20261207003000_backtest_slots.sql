-- Backtests a user runs at once, across every instance (issue 25, finding 3): a run holds one of
-- the user's TOOLS_BACKTEST_CONCURRENCY slots for at most its deadline (a lease an instance that
-- died leaves behind expires with it); functions/tools/backtest_slots.ts takes and gives them.
create table if not exists internal.backtest_slots (
  user_id text not null,
  slot int not null,
  lease uuid not null,
  expires_at timestamptz not null,
  primary key (user_id, slot)
);
revoke all on internal.backtest_slots from public;
