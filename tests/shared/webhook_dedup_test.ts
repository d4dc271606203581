/**
 * webhookDedup(): claims commit with their transaction, a concurrent claim of the same id waits
 * for the first and then conflicts or takes over, outcomes are recorded, old ids are purged in
 * batches. Runs on a table of the documented shape, not Stripe's, to keep it generic.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { Database } from "../../shared/db/db.ts";
import { parseLimits } from "../../shared/limits.ts";
import { webhookDedup } from "../../shared/webhook_dedup.ts";
import { freshDatabase, onServer } from "../support/db.ts";

const TABLE = "internal.test_webhook_events";

async function withDedupDb(fn: (db: Database) => Promise<void>) {
  const test = await freshDatabase();
  const db = new Database({
    url: test.url,
    limits: parseLimits({ DB_QUERY_TIMEOUT_MS: "5000" }),
    max: test.kind === "embedded" ? 1 : 4,
    onConnect: async (sql) => {
      await sql.unsafe(`
        create schema if not exists internal;
        create table if not exists ${TABLE} (
          id text primary key, type text not null, event_created timestamptz,
          received_at timestamptz not null default now(),
          outcome text check (outcome in ('applied', 'ignored')), reason text)`);
    },
  });
  try {
    await db.start();
    assert(db.up, "test database is up");
    await fn(db);
  } finally {
    await db.close();
    await test.close();
  }
}

const dedup = webhookDedup({ table: TABLE });
const event = (id: string) => ({
  id,
  type: "thing.happened",
  createdAt: new Date(1_700_000_000_000),
});

async function rows(db: Database) {
  return [
    ...await db.query((sql) => sql`select id, outcome, reason from ${sql(TABLE)} order by id`),
  ];
}

Deno.test("webhookDedup.claim() owns a new id once; after commit the same id is a duplicate", async () => {
  await withDedupDb(async (db) => {
    const first = await db.transaction(async (tx) => {
      const owned = await dedup.claim(tx, event("evt_1"));
      if (owned) await dedup.record(tx, "evt_1", { outcome: "applied" });
      return owned;
    });
    const second = await db.transaction((tx) => dedup.claim(tx, event("evt_1")));
    assertEquals([first, second], [true, false]);
    assertEquals(await rows(db), [{ id: "evt_1", outcome: "applied", reason: null }]);
  });
});

Deno.test("webhookDedup.claim() in a transaction that rolls back leaves no claim behind", async () => {
  await withDedupDb(async (db) => {
    await assertRejects(
      () =>
        db.transaction(async (tx) => {
          assert(await dedup.claim(tx, event("evt_2")));
          throw new Error("the effect failed");
        }),
      Error,
      "the effect failed",
    );
    assertEquals(await rows(db), []);
    const retried = await db.transaction(async (tx) => {
      const owned = await dedup.claim(tx, event("evt_2"));
      await dedup.record(tx, "evt_2", { outcome: "ignored", reason: "no user" });
      return owned;
    });
    assert(retried, "the redelivery owns the event");
    assertEquals(await rows(db), [{ id: "evt_2", outcome: "ignored", reason: "no user" }]);
  });
});

Deno.test("webhookDedup.record() refuses an id this transaction did not claim", async () => {
  await withDedupDb(async (db) => {
    await assertRejects(
      () => db.transaction((tx) => dedup.record(tx, "evt_never", { outcome: "applied" })),
      Error,
      "was not claimed",
    );
  });
});

Deno.test("webhookDedup() refuses a table name that is not schema.table", () => {
  for (const table of ["stripe_events", "internal.events; drop table x", "Internal.Events"]) {
    let threw = false;
    try {
      webhookDedup({ table });
    } catch {
      threw = true;
    }
    assert(threw, `rejects ${table}`);
  }
});

Deno.test({
  name:
    "a concurrent claim of the same id waits for the first transaction, then is a duplicate if it committed or owns the id if it rolled back",
  ...onServer,
  async fn() {
    await withDedupDb(async (db) => {
      for (const firstCommits of [true, false]) {
        const id = `evt_race_${firstCommits}`;
        let finishFirst!: () => void;
        const firstMayFinish = new Promise<void>((r) => finishFirst = r);
        let claimed!: () => void;
        const firstClaimed = new Promise<void>((r) => claimed = r);
        const first = db.transaction(async (tx) => {
          await dedup.claim(tx, event(id));
          await dedup.record(tx, id, { outcome: "applied" });
          claimed();
          await firstMayFinish;
          if (!firstCommits) throw new Error("first rolls back");
        }).catch(() => "rolled back");
        await firstClaimed;
        let secondDone = false;
        const second = db.transaction(async (tx) => {
          const owned = await dedup.claim(tx, event(id));
          if (owned) await dedup.record(tx, id, { outcome: "applied" });
          return owned;
        }).finally(() => secondDone = true);
        await new Promise((r) => setTimeout(r, 300));
        assert(!secondDone, "the second claim waits while the first transaction is open");
        finishFirst();
        await first;
        assertEquals(await second, !firstCommits);
      }
      assertEquals((await rows(db)).length, 2);
    });
  },
});

Deno.test("webhookDedup.purge() deletes ids older than the retention in batches and keeps the rest", async () => {
  await withDedupDb(async (db) => {
    await db.query((sql) =>
      sql`
      insert into ${sql(TABLE)} (id, type, received_at, outcome)
      select 'old_' || g, 't', now() - interval '31 days' - g * interval '1 minute', 'applied'
      from generate_series(1, 25) g`
    );
    await db.query((sql) =>
      sql`
      insert into ${sql(TABLE)} (id, type, received_at, outcome)
      values ('recent', 't', now() - interval '29 days', 'applied'), ('new', 't', now(), 'applied')`
    );
    const partial = await dedup.purge(db, { retentionDays: 30, batchSize: 10, maxBatches: 2 });
    assertEquals(partial, 20, "bounded by batch size × batches");
    const rest = await dedup.purge(db, { retentionDays: 30, batchSize: 10 });
    assertEquals(rest, 5);
    assertEquals((await rows(db)).map((r) => r.id), ["new", "recent"]);
    assertEquals(await dedup.purge(db, { retentionDays: 30 }), 0);
  });
});
