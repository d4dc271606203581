/**
 * The never-backwards rule, decided by one SQL statement (LifecycleRepository.apply) against a
 * real database: a stale broker answer after a fill, a filled quantity that would decrease, a
 * terminal status, and two writers racing with opposite answers, whatever their order; the fills
 * of the broker's feed (a fill seen twice, two instances' overlapping reads of the feed applied in
 * either order, a gap in the fills, an order read winning over its fills) and the feed's cursor,
 * which never moves back.
 */
import { assert, assertEquals } from "@std/assert";
import type { Database } from "../../../shared/db/db.ts";
import type { BrokerFill, BrokerState } from "../../../functions/broker-order/broker_state.ts";
import { LifecycleRepository } from "../../../functions/broker-order/lifecycle_repository.ts";
import { withMigratedDatabase } from "../../support/db.ts";

const USER = "6f1c1a3e-0000-4000-8000-000000000002";

async function withRepo(
  fn: (repo: LifecycleRepository, db: Database, insert: () => Promise<string>) => Promise<void>,
) {
  await withMigratedDatabase(async (db) => {
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
  }, { limits: { DB_QUERY_TIMEOUT_MS: "5000" }, poolMax: 4 });
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

const fill = (id: string, n: number, over: Partial<BrokerFill>): BrokerFill => ({
  id: `2026120710000${String(n).padStart(4, "0")}::${id}`,
  brokerOrderId: "b-" + id,
  time: `2026-12-07T10:00:0${n}Z`,
  qty: "1",
  price: "100",
  cumQty: "1",
  orderStatus: "partially_filled",
  ...over,
});

async function filledRow(db: Database, id: string) {
  const [r] = await db.query((sql) =>
    sql<{ status: string; q: string; avg: string | null; at: string | null }[]>`
      select status, trim_scale(filled_qty)::text as q, trim_scale(filled_avg_price)::text as avg,
        to_char(filled_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as at
      from public.orders where id = ${id}`
  );
  return [r.status, r.q, r.avg, r.at];
}

Deno.test("fills: partial fills then a fill give the exact weighted average; a fill seen twice, or two instances' reads of the feed applied in either order, change nothing the second time", () =>
  withRepo(async (repo, db, insert) => {
    // 4 shares: 1 at 100.1, 1 at 100.2, then 2 at 100.35 → (100.1 + 100.2 + 200.7) / 4 = 100.25
    const fills = (id: string) => [
      fill(id, 1, { price: "100.1" }),
      fill(id, 2, { price: "100.2", cumQty: "2" }),
      fill(id, 3, {
        price: "100.35",
        qty: "2",
        cumQty: "4",
        orderStatus: "filled",
      }),
    ];
    const FILLED = ["filled", "4", "100.25", "2026-12-07T10:00:03Z"];

    // One instance read the first fill; another read all three. The late one first:
    const a = await insert();
    const all = fills(a);
    assertEquals((await repo.apply([], { giveBack: 0, fills: all })).changed.size, 1);
    assertEquals(await filledRow(db, a), FILLED);
    assertEquals((await repo.apply([], { giveBack: 0, fills: all })).changed.size, 0, "twice");
    assertEquals((await repo.apply([], { giveBack: 0, fills: all.slice(0, 1) })).changed.size, 0);
    assertEquals(await filledRow(db, a), FILLED);

    // The early one first, then the late one (the first fill again): the same end, exact.
    const b = await insert();
    const bs = fills(b);
    await repo.apply([], { giveBack: 0, fills: bs.slice(0, 1) });
    assertEquals(await filledRow(db, b), ["partially_filled", "1", "100.1", null]);
    assertEquals((await repo.apply([], { giveBack: 0, fills: bs.slice(0, 1) })).changed.size, 0);
    assertEquals((await repo.apply([], { giveBack: 0, fills: bs })).changed.size, 1);
    assertEquals(await filledRow(db, b), FILLED);

    // Applied concurrently by two writers: one of them changes the row, the end is the same.
    const c = await insert();
    const cs = fills(c);
    const runs = await Promise.all([
      repo.apply([], { giveBack: 0, fills: cs }),
      repo.apply([], { giveBack: 0, fills: cs.slice(0, 2) }),
    ]);
    assert(runs[0].changed.size + runs[1].changed.size >= 1);
    assertEquals(await filledRow(db, c), FILLED);

    // After an order read stored the broker's own figure, later fills average from it.
    const d = await insert();
    await repo.apply([{ id: d, state: state(d, { filledQty: "2", filledAvgPrice: "100.15" }) }], {
      giveBack: 0,
    });
    assertEquals((await repo.apply([], { giveBack: 0, fills: fills(d) })).changed.size, 1);
    assertEquals(await filledRow(db, d), FILLED);
  }));

Deno.test("fills: a gap in an order's fills, a terminal order, or an order read in the same statement leave the fills unapplied", () =>
  withRepo(async (repo, db, insert) => {
    const gap = await insert();
    const r = await repo.apply([], {
      giveBack: 0,
      fills: [fill(gap, 3, { qty: "2", cumQty: "4", orderStatus: "filled" })],
    });
    assertEquals(r.changed.size, 0, "shares 1 and 2 were never priced");
    assertEquals(await filledRow(db, gap), ["accepted", "0", null, null]);

    const read = await insert();
    const readState = state(read, { status: "canceled", filledQty: "1", filledAvgPrice: "99" });
    const both = await repo.apply([{ id: read, state: readState }], {
      giveBack: 0,
      fills: [fill(read, 1, {}), fill(read, 2, { cumQty: "2" })],
    });
    assertEquals(both.changed.size, 1);
    assertEquals(await filledRow(db, read), ["canceled", "1", "99", null]);
    const after = await repo.apply([], {
      giveBack: 0,
      fills: [fill(read, 3, { qty: "3", cumQty: "4", orderStatus: "filled" })],
    });
    assertEquals(after.changed.size, 0, "terminal");
  }));

Deno.test("fills: the feed's cursor moves on in the statement that applies the fills, never back", () =>
  withRepo(async (repo, db, insert) => {
    const cursorOf = async () => (await repo.syncBegin({ want: 0, maxOrders: 10 })).cursor;
    assertEquals(await cursorOf(), null);
    const id = await insert();
    const f2 = fill(id, 2, {});
    await repo.apply([], {
      giveBack: 0,
      fills: [f2],
      cursor: { activityId: f2.id, time: f2.time },
    });
    assertEquals((await cursorOf())?.activityId, f2.id);
    const f1 = fill(id, 1, {});
    await repo.apply([], { giveBack: 0, cursor: { activityId: f1.id, time: f1.time } });
    assertEquals((await cursorOf())?.activityId, f2.id, "an older run's cursor is ignored");
    assertEquals(await filledRow(db, id), ["partially_filled", "1", "100", null]);
  }));
