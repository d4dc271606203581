/**
 * The never-backwards rule, decided by one SQL statement (LifecycleRepository.apply) against a
 * real database: a stale broker answer after a fill, a filled quantity that would decrease, a
 * terminal status, and two writers racing with opposite answers, whatever their order.
 */
import { databaseSettings } from "../../../shared/platform/platform.ts";
import { assertEquals } from "@std/assert";
import { Database } from "../../../shared/db/db.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import type { BrokerState } from "../../../functions/broker-order/broker_state.ts";
import { LifecycleRepository } from "../../../functions/broker-order/lifecycle_repository.ts";
import { freshDatabase } from "../../support/db.ts";

const USER = "6f1c1a3e-0000-4000-8000-000000000002";

async function withRepo(
  fn: (repo: LifecycleRepository, db: Database, insert: () => Promise<string>) => Promise<void>,
) {
  const t = await freshDatabase({ migrated: true });
  const migrations = await loadMigrations();
  const db = new Database({
    url: t.url,
    ...databaseSettings(parseLimits({ DB_QUERY_TIMEOUT_MS: "5000" })),
    poolMax: 4,
    serial: t.kind === "embedded",
    onConnect: (sql) => migrate(sql, migrations).then(() => {}),
  });
  try {
    await db.start();
    const repo = new LifecycleRepository(db, {
      budgetKey: "broker-api:test",
      budgetQuota: 200,
      budgetWindowMs: 60_000,
      absentAfterSeconds: 60,
    });
    const insert = async () => {
      const id = crypto.randomUUID();
      await db.query((sql) =>
        sql`insert into public.orders (id, user_id, client_order_id, broker_order_id, symbol, side,
          type, qty, time_in_force, status, broker_updated_at)
        values (${id}, ${USER}, ${"bo-" + id.slice(0, 8)}, ${"b-" + id}, 'AAPL', 'buy', 'market',
          4, 'day', 'accepted', '2026-12-07T10:00:00Z')`
      );
      return id;
    };
    await fn(repo, db, insert);
  } finally {
    await db.close();
    await t.close();
  }
}

const state = (id: string, over: Partial<BrokerState>): BrokerState => ({
  brokerOrderId: "b-" + id,
  status: "partially_filled",
  filledQty: "1",
  filledAvgPrice: "100",
  filledAt: null,
  canceledAt: null,
  expiredAt: null,
  updatedAt: "2026-12-07T10:00:01Z",
  ...over,
});

async function row(db: Database, id: string) {
  const [r] = await db.query((sql) =>
    sql<{ status: string; filled_qty: string }[]>`
      select status, trim_scale(filled_qty)::text as filled_qty from public.orders where id = ${id}`
  );
  return [r.status, r.filled_qty];
}

Deno.test("never backwards: a stale answer after a fill, a decreasing fill and a terminal status change nothing", () =>
  withRepo(async (repo, db, insert) => {
    const id = await insert();
    const filled = state(id, {
      status: "filled",
      filledQty: "4",
      filledAvgPrice: "101.5",
      filledAt: "2026-12-07T10:00:05Z",
      updatedAt: "2026-12-07T10:00:05Z",
    });
    assertEquals((await repo.apply([{ id, state: filled }], { giveBack: 0 })).changed.size, 1);
    // The answer of a read that started before the fill arrives late.
    const stale = state(id, { updatedAt: "2026-12-07T10:00:02Z" });
    assertEquals((await repo.apply([{ id, state: stale }], { giveBack: 0 })).changed.size, 0);
    // Even a newer timestamp cannot reopen a terminal order or take fills back.
    const newer = state(id, { status: "canceled", updatedAt: "2026-12-07T10:09:00Z" });
    assertEquals((await repo.apply([{ id, state: newer }], { giveBack: 0 })).changed.size, 0);
    assertEquals(await row(db, id), ["filled", "4"]);

    const open = await insert();
    await repo.apply([{ id: open, state: state(open, { filledQty: "3" }) }], { giveBack: 0 });
    const less = state(open, { filledQty: "2", updatedAt: "2026-12-07T10:00:09Z" });
    assertEquals((await repo.apply([{ id: open, state: less }], { giveBack: 0 })).changed.size, 0);
    assertEquals(await row(db, open), ["partially_filled", "3"]);
    // The same answer twice (two instances reading one state): applied once.
    const same = state(open, { filledQty: "3" });
    assertEquals((await repo.apply([{ id: open, state: same }], { giveBack: 0 })).changed.size, 0);
  }));

Deno.test("never backwards: two writers racing with an older and a newer answer end in the newer, in either order", () =>
  withRepo(async (repo, db, insert) => {
    for (const newerFirst of [true, false]) {
      const ids = await Promise.all(Array.from({ length: 10 }, insert));
      const older = ids.map((id) => ({ id, state: state(id, {}) }));
      const newer = ids.map((id) => ({
        id,
        state: state(id, {
          status: "filled",
          filledQty: "4",
          updatedAt: "2026-12-07T10:00:07Z",
        }),
      }));
      const [a, b] = newerFirst ? [newer, older] : [older, newer];
      await Promise.all([
        repo.apply(a, { giveBack: 0 }),
        repo.apply(b, { giveBack: 0 }),
      ]);
      for (const id of ids) assertEquals(await row(db, id), ["filled", "4"]);
    }
  }));

Deno.test("the broker budget: takes never exceed the quota across callers, and unused takes are given back", () =>
  withRepo(async (repo, db) => {
    const takes = await Promise.all(
      Array.from({ length: 6 }, () => repo.syncBegin({ want: 50, maxOrders: 10 })),
    );
    const granted = takes.map((t) => t.granted).reduce((a, b) => a + b, 0);
    assertEquals(granted, 200, JSON.stringify(takes.map((t) => t.granted)));
    await repo.apply([], { giveBack: 30 });
    assertEquals((await repo.syncBegin({ want: 50, maxOrders: 10 })).granted, 30);
    const [r] = await db.query((sql) =>
      sql<{ n: number }[]>`select (select sum(c) from unnest(counts) c)::int as n
        from internal.rate_limits where key = 'broker-api:test'`
    );
    assertEquals(r.n, 200);
  }));
