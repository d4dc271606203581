-- Delivery of queued alerts does not depend on a timer surviving in a deployed isolate: pg_cron
-- calls POST /functions/v1/discord-alert/drain every minute through pg_net, with the project URL
-- and the service-role key read from Vault at each run (secrets `project_url` and
-- `service_role_key`; docs/operations.md "Schedules" says how to create them).
-- Where the extensions do not exist (plain Postgres, PGlite, the local server) this does nothing:
-- locally, delivery starts after each enqueue and `POST /drain` can be called by hand.
do $$
begin
  if not exists (select 1 from pg_available_extensions where name = 'pg_cron')
    or not exists (select 1 from pg_available_extensions where name = 'pg_net')
    or not exists (select 1 from pg_namespace where nspname = 'vault') then
    raise notice 'pg_cron, pg_net or Vault is not available: discord-alert/drain is not scheduled';
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;
  create extension if not exists pg_net with schema extensions;
  perform cron.schedule(
    'discord-alert-drain',
    '* * * * *',
    $job$
      select net.http_post(
        url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url')
          || '/functions/v1/discord-alert/drain',
        headers := jsonb_build_object(
          'Content-Type', 'application/json',
          'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets
            where name = 'service_role_key')
        ),
        body := '{}'::jsonb,
        timeout_milliseconds := 10000
      )
    $job$
  );
end
$$;
