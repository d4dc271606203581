import { databaseSettings } from "../../../shared/platform/platform.ts";
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  classifyDbError,
  Database,
  guardDriverBugs,
  isDriverSignal,
} from "../../../shared/db/db.ts";
import { DatabaseBusy, DatabaseUnavailable } from "../../../shared/errors.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { freshDatabase, isEmbeddedUrl, onServer, type TestDatabase } from "../../support/db.ts";
import { FAST_LIMITS } from "../../support/env.ts";
import { type FaultProxy, startFaultProxy } from "../../support/fault_proxy.ts";
import { settledWithin } from "../../support/wait.ts";

function openDb(url: string, extra: Record<string, string> = {}) {
  return new Database({
    url,
    serial: isEmbeddedUrl(url),
    ...databaseSettings(parseLimits({ ...FAST_LIMITS, ...extra })),
  });
}

async function withDb(
  fn: (db: Database, t: TestDatabase) => Promise<void>,
  extra: Record<string, string> = {},
) {
  const t = await freshDatabase();
  const db = openDb(t.url, extra);
  try {
    await db.start();
    assert(db.up, "the database should be up after start");
    await fn(db, t);
  } finally {
    await db.close();
    await t.close();
  }
}

/** A fresh database reached through a fault proxy; `make` builds the Database on its URL. */
async function withProxiedDb(
  fn: (db: Database, proxy: FaultProxy) => Promise<void>,
  make: (url: string) => Database = (url) => openDb(url),
) {
  const t = await freshDatabase();
  const target = new URL(t.url);
  const proxy = await startFaultProxy({
    hostname: target.hostname,
    port: Number(target.port || 5432),
  });
  const db = make(proxy.url(t.url));
  try {
    await fn(db, proxy);
  } finally {
    await db.close();
    await proxy.close();
    await t.close();
  }
}

/**
 * Waits until the gate is open again: a bounded wait (far above a healthy recovery) that asserts
 * the outcome, the database serving again by itself, not how fast.
 */
async function untilUp(db: Database, tries = 300) {
  for (let i = 0; i < tries && !db.up; i++) await new Promise((r) => setTimeout(r, 50));
  assert(db.up, "the database should be back by itself");
}

/** Resolves once `n` parties have arrived. */
function barrier(n: number) {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((r) => (release = r));
  return () => {
    if (++arrived === n) release();
    return all;
  };
}

Deno.test("classifyDbError sorts SQLSTATEs and socket failures", () => {
  for (const code of ["40P01", "40001", "53300", "55P03"]) {
    assertEquals(classifyDbError({ code }), "transient", code);
  }
  for (
    const code of [
      "08006",
      "08001",
      "28P01",
      "3D000",
      "57P01",
      "57P03",
      "ECONNREFUSED",
      "CONNECTION_CLOSED",
    ]
  ) {
    assertEquals(classifyDbError({ code }), "connection", code);
  }
  // 42P01 (undefined_table) is "schema" (tests/shared/db/schema_test.ts), not "other".
  for (const code of ["23505", "22P02", undefined]) {
    assertEquals(classifyDbError({ code }), "other", String(code));
  }
});

Deno.test("migrations run once each, and a second run applies nothing", async () => {
  const t = await freshDatabase();
  const db = openDb(t.url);
  try {
    await db.start();
    const migrations = await loadMigrations();
    const first = await db.query((sql) => migrate(sql, migrations));
    assertEquals(first, migrations.map((m) => m.version));
    const second = await db.query((sql) => migrate(sql, migrations));
    assertEquals(second, []);
    const rows = await db.query((sql) =>
      sql`select version from supabase_migrations.schema_migrations order by version`
    );
    assertEquals(rows.map((r) => r.version), migrations.map((m) => m.version));
    const [uid] = await db.query((sql) =>
      sql`select count(*)::int as n from pg_proc where proname = 'uid'`
    );
    assertEquals(uid.n, 1);
  } finally {
    await db.close();
    await t.close();
  }
});

Deno.test({
  name: "two migration runners started at once apply each file exactly once",
  ...onServer,
  async fn() {
    const t = await freshDatabase();
    const a = openDb(t.url);
    const b = openDb(t.url);
    try {
      await Promise.all([a.start(), b.start()]);
      const migrations = await loadMigrations();
      const [ra, rb] = await Promise.all([
        a.query((sql) => migrate(sql, migrations)),
        b.query((sql) => migrate(sql, migrations)),
      ]);
      assertEquals([...ra, ...rb].sort(), migrations.map((m) => m.version).sort());
      const [row] = await a.query((sql) =>
        sql`select count(*)::int as n from supabase_migrations.schema_migrations`
      );
      assertEquals(row.n, migrations.length);
    } finally {
      await a.close();
      await b.close();
      await t.close();
    }
  },
});

Deno.test({
  name: "a real deadlock between two connections is retried and both transactions commit",
  ...onServer,
  fn: () =>
    withDb(async (db) => {
      await db.query((sql) => sql`create table acct (id int primary key, n int not null)`);
      await db.query((sql) => sql`insert into acct values (1, 0), (2, 0)`);
      const [before] = await db.query((sql) =>
        sql`select deadlocks::int as d from pg_stat_database where datname = current_database()`
      );
      const meet = barrier(2);
      let attempts = 0;
      const transfer = (first: number, second: number) =>
        db.transaction(async (tx) => {
          attempts++;
          await tx`update acct set n = n + 1 where id = ${first}`;
          if (attempts <= 2) await meet();
          await tx`update acct set n = n + 1 where id = ${second}`;
        });
      await Promise.all([transfer(1, 2), transfer(2, 1)]);
      const rows = await db.query((sql) => sql`select n from acct order by id`);
      assertEquals(rows.map((r) => r.n), [2, 2]);
      assert(db.health().retries >= 1, "the deadlocked transaction should have been re-run");
      // The stats collector may lag; give it a moment to count the deadlock.
      let after = before.d;
      for (let i = 0; i < 20 && after === before.d; i++) {
        await new Promise((r) => setTimeout(r, 100));
        [{ d: after }] = await db.query((sql) =>
          sql`select deadlocks::int as d from pg_stat_database where datname = current_database()`
        );
      }
      assert(after > before.d, "Postgres should have detected a deadlock");
    }, { DB_QUERY_TIMEOUT_MS: "5000" }),
});

Deno.test({
  name: "a real serialization failure is retried and the transaction commits",
  ...onServer,
  fn: () =>
    withDb(async (db) => {
      await db.query((sql) =>
        sql`create table shift (id serial primary key, on_call boolean not null)`
      );
      const meet = barrier(2);
      let attempts = 0;
      const goOnCall = () =>
        db.transaction(async (tx) => {
          attempts++;
          const [{ n }] = await tx`select count(*)::int as n from shift where on_call`;
          if (attempts <= 2) await meet();
          if (n < 5) await tx`insert into shift (on_call) values (true)`;
        }, { isolation: "serializable" });
      await Promise.all([goOnCall(), goOnCall()]);
      const [{ n }] = await db.query((sql) => sql`select count(*)::int as n from shift`);
      assertEquals(n, 2);
      assert(attempts >= 3, `one transaction should have been re-run (attempts: ${attempts})`);
      assert(db.health().retries >= 1);
    }),
});

Deno.test("a transaction that keeps failing transiently ends in DatabaseBusy after its attempts", () =>
  withDb(async (db) => {
    let attempts = 0;
    await assertRejects(
      () =>
        db.transaction(async (tx) => {
          attempts++;
          await tx`do $$ begin raise exception 'simulated conflict' using errcode = '40001'; end $$`;
        }),
      DatabaseBusy,
    );
    assertEquals(attempts, 3);
    assertEquals(db.health().exhausted, 1);
  }, { DB_MAX_ATTEMPTS: "3" }));

Deno.test("a non-transient error is thrown as is, not retried, and the transaction rolls back", () =>
  withDb(async (db) => {
    await db.query((sql) => sql`create table uniq (id int primary key)`);
    let attempts = 0;
    const err = await assertRejects(() =>
      db.transaction(async (tx) => {
        attempts++;
        await tx`insert into uniq values (1)`;
        await tx`insert into uniq values (1)`;
      })
    );
    assertEquals((err as unknown as { code: string }).code, "23505");
    assertEquals(attempts, 1);
    const [{ n }] = await db.query((sql) => sql`select count(*)::int as n from uniq`);
    assertEquals(n, 0);
  }));

Deno.test("a cut database fails with DatabaseUnavailable on its first failed attempt, calls while down never try the database, and it recovers by itself", () =>
  withProxiedDb(async (db, proxy) => {
    await db.start();
    await db.query((sql) => sql`create table if not exists written (id int)`);
    proxy.cut();
    proxy.resetConnections();
    await assertRejects(
      () => db.transaction((tx) => tx`insert into written values (1)`),
      DatabaseUnavailable,
    );
    // Fail fast, counted: a connection failure is not retried (at most one new connection was
    // tried, the pool's own reconnect), and it closes the gate.
    assert(proxy.connections <= 1, `${proxy.connections} connection attempts`);
    assertEquals(db.health().state, "down");
    assert(db.health().nextProbeAt !== null, "a probe should be scheduled");
    // While down, calls fail without touching the database, with a retry delay: the only
    // connection attempts are the gate's probes (one may still be under way).
    proxy.resetConnections();
    const probesBefore = db.health().probeFailures;
    for (let i = 0; i < 20; i++) {
      const err = await assertRejects(
        () => db.query((sql) => sql`select 1`),
        DatabaseUnavailable,
      ) as DatabaseUnavailable;
      assert(err.retryAfterMs >= 0 && err.retryAfterMs <= 2000);
    }
    const probes = db.health().probeFailures - probesBefore;
    assert(
      proxy.connections <= probes + 1,
      `${proxy.connections} connection attempts for 20 calls and ${probes} probes`,
    );
    proxy.heal();
    await untilUp(db);
    const rows = await db.query((sql) => sql`select count(*)::int as n from written`);
    assertEquals(rows[0].n, 0, "nothing was written while the database was cut");
    assert(db.health().failures >= 1);
  }));

Deno.test("a stalled database connection ends as DatabaseUnavailable on its deadline while the database still stalls", () =>
  withProxiedDb(async (db, proxy) => {
    await db.start();
    proxy.stall();
    // The call must end with the database still stalled: only its deadline can end it.
    await settledWithin(
      15_000,
      "a call on a stalled connection",
      assertRejects(() => db.query((sql) => sql`select 1`), DatabaseUnavailable),
    );
    assertEquals(db.health().lastError, "QUERY_DEADLINE");
    assertEquals(db.health().state, "down");
    proxy.heal();
    await untilUp(db);
    assertEquals((await db.query((sql) => sql`select 1 as x`))[0].x, 1);
  }));

Deno.test("a start while the database stalls does not hang: it gives up with the gate down, and migrations run once it answers", async () => {
  const migrations = await loadMigrations();
  let runs = 0;
  const make = (url: string) =>
    new Database({
      url,
      ...databaseSettings(parseLimits({ ...FAST_LIMITS, DB_MIGRATE_TIMEOUT_MS: "1500" })),
      onConnect: async (sql) => {
        runs++;
        await migrate(sql, migrations);
      },
    });
  await withProxiedDb(async (db, proxy) => {
    proxy.stall();
    // start() returns with the database still stalled: its deadlines, not the database, end it.
    await settledWithin(15_000, "start() on a stalled database", db.start());
    assertEquals(db.up, false);
    assertEquals(runs, 0, "the migrations wait for a database that answers");
    proxy.heal();
    await untilUp(db);
    const [{ n }] = await db.query((sql) =>
      sql`select count(*)::int as n from supabase_migrations.schema_migrations`
    );
    assertEquals(n, migrations.length);
    // A later outage does not re-run the migrations.
    const before = runs;
    proxy.cut();
    await assertRejects(() => db.query((sql) => sql`select 1`), DatabaseUnavailable);
    proxy.heal();
    await untilUp(db);
    assertEquals(runs, before);
  }, make);
});

Deno.test("overlapping calls on the embedded database are run one at a time and all answered", async () => {
  const t = await freshDatabase({ embedded: true });
  const db = openDb(t.url);
  try {
    await db.start();
    assert(db.serial, "the embedded database runs one call at a time, as its opener said");
    const answers = await Promise.all(
      Array.from(
        { length: 40 },
        (_, i) =>
          i % 2
            ? db.query((sql) => sql`select ${i}::int as i, pg_sleep(0.001)`).then((r) => r[0].i)
            : db.transaction(async (tx) => (await tx`select ${i}::int as i`)[0].i),
      ),
    );
    assertEquals(answers, Array.from({ length: 40 }, (_, i) => i));
  } finally {
    await db.close();
    await t.close();
  }
});

Deno.test("a blocked event loop past the deadline does not count as a database failure", () =>
  withDb(async (db) => {
    const pending = db.query((sql) => sql`select 1 as x`);
    const until = performance.now() + 1300; // longer than the 1000 ms deadline of FAST_LIMITS
    while (performance.now() < until) { /* a synchronous load, as jsdom's first import */ }
    assertEquals((await pending)[0].x, 1);
    assert(db.up, "the gate stays open");
    assertEquals(db.health().failures, 0);
  }));

Deno.test({
  name:
    "waiting for a connection under load is not an outage: queued calls run, or are shed as DB_BUSY, and the gate stays open",
  ...onServer,
  fn: () =>
    withDb(async (db) => {
      // 24 calls of 200 ms on 2 connections: the last wait 2.2 s, past the 1 s call deadline.
      const calls = () =>
        Array.from({ length: 24 }, () =>
          db.query((sql) => sql`select pg_sleep(0.2)`).then(() => "ok", (e) => e));
      const results = await Promise.all(calls());
      assertEquals(
        results.filter((r) =>
          r !== "ok"
        ).map(String),
        [],
      );
      assert(db.up);
      assertEquals(db.health().failures, 0);
    }, { DB_POOL_MAX: "2", DB_QUEUE_TIMEOUT_MS: "10000" }),
});

Deno.test({
  name:
    "a call that cannot get a connection within DB_QUEUE_TIMEOUT_MS is shed with DatabaseBusy, not DatabaseUnavailable",
  ...onServer,
  fn: () =>
    withDb(async (db) => {
      const results = await Promise.all(
        Array.from({ length: 12 }, () =>
          db.query((sql) => sql`select pg_sleep(0.3)`).then(() => "ok", (e) => e)),
      );
      const shed = results.filter((r) =>
        r instanceof DatabaseBusy
      );
      assert(shed.length > 0, "some calls were shed");
      assertEquals(results.filter((r) => r !== "ok" && !(r instanceof DatabaseBusy)), []);
      assert(db.up, "load never closes the gate");
      assertEquals(db.health().shed, shed.length);
    }, { DB_POOL_MAX: "2", DB_QUEUE_TIMEOUT_MS: "400" }),
});

/** An error as postgres.js raises it from inside its connection code. */
function driverError(code: string): Error {
  const err = Object.assign(new Error(`write ${code} 127.0.0.1:5432`), { code });
  err.stack =
    `Error: write ${code}\n    at Object.terminate (file:///app/node_modules/.deno/postgres@3.4.9/node_modules/postgres/src/connection.js:425:20)`;
  return err;
}

Deno.test("isDriverSignal() picks out postgres.js's stray connection signals and nothing else", () => {
  assert(isDriverSignal(driverError("CONNECTION_DESTROYED")));
  assert(isDriverSignal(driverError("CONNECTION_CLOSED")));
  assert(!isDriverSignal(driverError("23505")), "a real query error is not a stray signal");
  assert(
    !isDriverSignal(Object.assign(new Error("x"), { code: "CONNECTION_DESTROYED" })),
    "not from the driver",
  );
  assert(!isDriverSignal(new Error("anything else")));
  assert(!isDriverSignal(undefined));
});

Deno.test("guardDriverBugs() keeps the process alive through a stray driver rejection", async () => {
  const swallowed: unknown[] = [];
  const stop = guardDriverBugs((err) => swallowed.push(err));
  try {
    const stray = driverError("CONNECTION_DESTROYED");
    void Promise.reject(stray); // nobody handles it, as in porsager/postgres#1201
    await new Promise((r) => setTimeout(r, 20));
    assert(swallowed.includes(stray), "the stray signal was swallowed and reported");
  } finally {
    stop();
  }
});

Deno.test("a call before any probe runs the first probe and waits for it (a deployed function's first request)", async () => {
  const t = await freshDatabase();
  const db = openDb(t.url);
  try {
    assert(!db.up, "nothing has probed yet");
    assertEquals((await db.query((sql) => sql`select 1 as x`))[0].x, 1);
    assert(db.up, "the first call's probe opened the gate");
    assertEquals(db.health().failures, 0);
  } finally {
    await db.close();
    await t.close();
  }
});

Deno.test("a first call to an unreachable database waits for the first probe, then fails fast with 503", async () => {
  const db = openDb("postgres://postgres@127.0.0.1:1/none");
  try {
    await assertRejects(() => db.query((sql) => sql`select 1`), DatabaseUnavailable);
    assertEquals(db.health().state, "down");
    assert(db.health().probeFailures >= 1, "the probe ran and failed");
  } finally {
    await db.close();
  }
});
