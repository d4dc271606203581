/**
 * payment-webhook under failure: the database cut while the event's transaction is open, its
 * commit held at the proxy (503 with Retry-After, nothing
 * half-written, the redelivery applies once) and a server process killed while its event's
 * transaction is open (no claim left behind). Needs the Postgres server (`onServer`).
 */
import postgres from "postgres";
import { assert, assertEquals } from "@std/assert";
import { freshDatabase, onServer } from "../../support/db.ts";
import { testEnv } from "../../support/env.ts";
import { startFaultProxy } from "../../support/fault_proxy.ts";
import { spawnServer, startTestServer } from "../../support/server.ts";
import { checkoutCompleted, delivery, webhookEnv } from "./stripe_events.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it returns a value, failing after `ms`. */
async function eventually<T>(what: string, check: () => Promise<T | undefined>, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await sleep(50);
  }
  throw new Error(`Timed out waiting for ${what}`);
}

async function counts(sql: postgres.Sql) {
  const [row] = await sql`
    select (select count(*)::int from public.purchases) as purchases,
      (select count(*)::int from internal.stripe_events) as events`;
  return { purchases: row.purchases as number, events: row.events as number };
}

Deno.test({
  name:
    "with the database cut while the event's transaction is open (its commit held) the webhook answers 503 with Retry-After, and after heal the redelivery applies the event once",
  ...onServer,
  async fn() {
    const db = await freshDatabase({ migrated: true });
    const target = new URL(db.url);
    const proxy = await startFaultProxy({ hostname: target.hostname, port: Number(target.port) });
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const env = testEnv(proxy.url(db.url), webhookEnv());
      const server = await startTestServer(env, { only: ["payment-webhook"] });
      try {
        const init = await delivery(checkoutCompleted());
        // The transaction's `commit` (a simple query of its own, after `begin` and the event's
        // apply) is held at the proxy: once it is, the transaction is open on the server with
        // its effect applied and not committed, and the cut lands exactly there.
        const commitHeld = proxy.holdWhen((text) => text.includes("commit\0"));
        const pending = server.call("payment-webhook", init);
        await Promise.race([
          commitHeld,
          pending.then((res) => {
            throw new Error(`answered ${res.status} before any commit reached the database`);
          }),
        ]);
        const [open] = await sql`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and state = 'idle in transaction'`;
        assertEquals(open.n, 1, "the event's transaction is open when the database is cut");
        proxy.cut();
        const res = await pending;
        const body = await res.json();
        assertEquals(res.status, 503);
        assertEquals(body.error.code, "DB_UNAVAILABLE");
        assert(Number(res.headers.get("retry-after")) >= 1, "503 carries Retry-After");
        assertEquals(await counts(sql), { purchases: 0, events: 0 }, "nothing half-written");

        proxy.heal();
        // Stripe redelivers later; until the instance's probe succeeds it keeps answering 503.
        const applied = await eventually("the redelivery to be accepted", async () => {
          const again = await server.call("payment-webhook", init);
          const answer = await again.json();
          if (again.status === 503) return undefined;
          return { status: again.status, answer };
        });
        // Not a duplicate: the cut transaction committed nothing, so this delivery applied it.
        assertEquals(applied, { status: 200, answer: { received: true } });
        assertEquals(await counts(sql), { purchases: 1, events: 1 });
        const repeat = await server.call("payment-webhook", init);
        assertEquals(await repeat.json(), { received: true, duplicate: true });
        assertEquals(await counts(sql), { purchases: 1, events: 1 });
      } finally {
        await server.close();
      }
    } finally {
      await sql.end();
      await proxy.close();
      await db.close();
    }
  },
});

Deno.test({
  name:
    "a server killed while its event's transaction is open leaves no claim behind, and the redelivery is applied once",
  ...onServer,
  async fn() {
    const db = await freshDatabase({ migrated: true });
    const admin = postgres(db.url, { max: 2, onnotice: () => {} });
    try {
      // A long query timeout, so the lock wait outlasts the kill (lock_timeout is half of it).
      const env = testEnv(db.url, { ...webhookEnv(), DB_QUERY_TIMEOUT_MS: "8000" });
      const doomed = await spawnServer(env);
      const init = await delivery(checkoutCompleted());
      let released!: () => void;
      const release = new Promise<void>((r) => released = r);
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => locked = r);
      const holder = admin.begin(async (tx) => {
        await tx`lock table public.purchases in exclusive mode`;
        locked();
        await release;
      });
      let delivered: Promise<unknown> | undefined;
      try {
        await isLocked;
        delivered = doomed.call("payment-webhook", init).then((r) => r.body?.cancel(), () => {});
        // The server's transaction has claimed the event and now waits for the purchases lock.
        const pid = await eventually("the server's backend to wait on the lock", async () => {
          const [row] = await admin`
            select pid from pg_stat_activity
            where datname = current_database() and application_name = 'edge-functions'
              and wait_event_type = 'Lock'`;
          return row?.pid as number | undefined;
        });
        await doomed.stop("SIGKILL");
        released();
        await holder;
        // Postgres ends the orphaned backend once it finds the client gone, rolling back.
        await eventually("the killed server's backend to end", async () => {
          const [row] = await admin`select 1 from pg_stat_activity where pid = ${pid}`;
          return row ? undefined : true;
        });
      } finally {
        released();
        await holder.catch(() => {});
        await doomed.stop("SIGKILL");
        await delivered;
      }
      assertEquals([...await admin`select id from internal.stripe_events`], [], "no claim left");
      assertEquals([...await admin`select id from public.purchases`], []);

      const survivor = await startTestServer(env, { only: ["payment-webhook"] });
      try {
        const res = await survivor.call("payment-webhook", init);
        assertEquals([res.status, await res.json()], [200, { received: true }]);
        const [{ n }] = await admin`select count(*)::int as n from public.purchases`;
        assertEquals(n, 1);
      } finally {
        await survivor.close();
      }
    } finally {
      await admin.end();
      await db.close();
    }
  },
});
