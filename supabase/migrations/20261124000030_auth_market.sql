-- auth: single-use OAuth states, broker connections (users read their own) and the broker tokens,
-- encrypted, where no API role can read them. market-data: the quote cache shared by every
-- instance, refresh leases (at most one upstream call per symbol across instances) and the
-- provider's rate-limit pause.

-- One row per `GET /oauth/start`; consumed in the transaction that stores the connection.
create table if not exists internal.oauth_states (
  nonce text primary key,
  user_id uuid not null,
  broker text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  consumed_at timestamptz
);
create index if not exists oauth_states_user_expires on internal.oauth_states (user_id, expires_at);

create table if not exists public.broker_connections (
  user_id uuid not null,
  broker text not null,
  status text not null check (status in ('connected', 'disconnected')),
  connected_at timestamptz not null default now(),
  primary key (user_id, broker)
);
alter table public.broker_connections enable row level security;
-- On Supabase, new public tables are granted to every API role by default: take that back first.
revoke all on public.broker_connections from anon, authenticated;
grant select on public.broker_connections to authenticated;
create policy broker_connections_read_own on public.broker_connections
  for select to authenticated using (user_id = auth.uid());

-- Each token is [1-byte key version][12-byte IV][AES-256-GCM ciphertext and tag], its additional
-- data binding it to (user, broker, kind) so a ciphertext cannot be moved to another row.
create table if not exists internal.broker_tokens (
  user_id uuid not null,
  broker text not null,
  access_token bytea not null,
  refresh_token bytea,
  token_type text not null,
  scope text,
  expires_at timestamptz,
  updated_at timestamptz not null default now(),
  primary key (user_id, broker),
  foreign key (user_id, broker) references public.broker_connections (user_id, broker)
    on delete cascade
);
revoke all on internal.oauth_states, internal.broker_tokens from public;

-- Latest quote per symbol; `quote` is JSON null when the provider had none for the symbol.
create table if not exists internal.quote_cache (
  symbol text primary key,
  quote jsonb not null,
  fetched_at timestamptz not null
);

-- Who is refreshing a symbol right now; a lease expires by itself if its holder dies.
create table if not exists internal.quote_refresh_leases (
  symbol text primary key,
  owner uuid not null,
  leased_until timestamptz not null
);

-- An upstream's own rate limit (429 Retry-After): no instance calls it before `paused_until`.
create table if not exists internal.provider_pauses (
  provider text primary key,
  paused_until timestamptz not null
);
revoke all on internal.quote_cache, internal.quote_refresh_leases, internal.provider_pauses
  from public;

-- Claims the refresh of the symbols that have no fresh cached quote and no live lease, in one
-- round trip. While the provider is paused it claims nothing and answers one row with the pause.
create or replace function internal.quote_refresh_claim(
  p_symbols text[], p_owner uuid, p_fresh_ms int, p_lease_ms int
)
returns table (claimed text, paused_ms int)
language plpgsql as $$
declare
  now_ts timestamptz := clock_timestamp();
  pause_end timestamptz;
begin
  select p.paused_until into pause_end from internal.provider_pauses p
    where p.provider = 'market-data' and p.paused_until > now_ts;
  if pause_end is not null then
    claimed := null;
    paused_ms := ceil(extract(epoch from (pause_end - now_ts)) * 1000)::int;
    return next;
    return;
  end if;
  return query
    insert into internal.quote_refresh_leases as l (symbol, owner, leased_until)
    select s.sym, p_owner, now_ts + make_interval(secs => p_lease_ms / 1000.0)
    from unnest(p_symbols) as s(sym)
    where not exists (
      select 1 from internal.quote_cache c
      where c.symbol = s.sym and c.fetched_at > now_ts - make_interval(secs => p_fresh_ms / 1000.0)
    )
    order by s.sym
    on conflict (symbol) do update set owner = excluded.owner, leased_until = excluded.leased_until
      where l.leased_until <= now_ts
    returning l.symbol, null::int;
end
$$;
