-- Supabase's API roles and auth.uid(), created only where missing, so the same migrations run on
-- a real Supabase project (where they exist already), a plain Postgres and the embedded one.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  if not exists (
    select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid'
  ) then
    -- Same definition as Supabase's: the `sub` claim of the request's JWT.
    execute $fn$
      create function auth.uid() returns uuid language sql stable as $body$
        select coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $body$
    $fn$;
  end if;
end
$$;

do $$
begin
  grant usage on schema auth to anon, authenticated, service_role;
exception when insufficient_privilege then
  null; -- on Supabase the auth schema is managed by the platform, which grants this already
end
$$;
grant usage on schema public to anon, authenticated, service_role;

-- Private state of the functions (idempotency keys, limits, queues, tokens): no API role reads it.
create schema if not exists internal;
revoke all on schema internal from public;
