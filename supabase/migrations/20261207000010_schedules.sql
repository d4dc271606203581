-- Every periodic job in one place: `internal.scheduled_jobs` names each job, its cron schedule and
-- the function route it POSTs to. Deployed, `internal.schedule_job` also hands the job to
-- pg_cron, which calls the route through pg_net with the project URL and the service-role key
-- read from Vault at each run (secrets `project_url` and `service_role_key`). The local server
-- reads the same table and runs the same jobs on the same schedules itself, so what is delivered,
-- synced or caught up deployed is also delivered, synced or caught up locally.
-- Where pg_cron, pg_net or Vault do not exist (plain Postgres, PGlite) only the row is written.
create table if not exists internal.scheduled_jobs (
  name text primary key,
  -- Five-field cron expression, as pg_cron reads it.
  schedule text not null,
  -- The route, from the project URL: '/functions/v1/<function>[/<sub-path>]'.
  path text not null check (path like '/functions/v1/%'),
  body jsonb not null default '{}'::jsonb,
  updated_at timestamptz not null default now()
);

create or replace function internal.schedule_job(
  p_name text,
  p_schedule text,
  p_path text,
  p_body jsonb default '{}'::jsonb
) returns void
language plpgsql
as $$
begin
  insert into internal.scheduled_jobs (name, schedule, path, body)
  values (p_name, p_schedule, p_path, p_body)
  on conflict (name) do update
    set schedule = excluded.schedule, path = excluded.path, body = excluded.body,
        updated_at = now();

  if not exists (select 1 from pg_available_extensions where name = 'pg_cron')
    or not exists (select 1 from pg_available_extensions where name = 'pg_net')
    or not exists (select 1 from pg_namespace where nspname = 'vault') then
    raise notice 'pg_cron, pg_net or Vault is not available: % is recorded, not scheduled', p_name;
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;
  create extension if not exists pg_net with schema extensions;
  -- cron.schedule with an existing name replaces that job's schedule and command.
  perform cron.schedule(
    p_name,
    p_schedule,
    format(
      $job$
        select net.http_post(
          url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url')
            || %L,
          headers := jsonb_build_object(
            'Content-Type', 'application/json',
            'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets
              where name = 'service_role_key')
          ),
          body := %L::jsonb,
          timeout_milliseconds := 10000
        )
      $job$,
      p_path,
      p_body::text
    )
  );
end
$$;
revoke all on function internal.schedule_job(text, text, text, jsonb) from public;

-- The alert drain (first scheduled by 20261202000100_drain_schedule.sql), now recorded here too.
select internal.schedule_job('discord-alert-drain', '* * * * *', '/functions/v1/discord-alert/drain');
