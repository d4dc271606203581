/**
 * The orders repository against a real database: the order row and the key's settling are one
 * statement, so an attempt whose lease was taken over writes nothing and gets 409.
 */
import { databaseSettings } from "../../../shared/platform/platform.ts";
import { Hono } from "hono";
import { assertEquals } from "@std/assert";
import { Database } from "../../../shared/db/db.ts";
import { errorParts } from "../../../shared/errors.ts";
import { idempotency, idempotencyClaim } from "../../../shared/http/idempotency.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { OrdersRepository } from "../../../functions/broker-order/orders_repository.ts";
import { freshDatabase } from "../../support/db.ts";

const USER = "6f1c1a3e-0000-4000-8000-000000000001";
const ORDER = {
  symbol: "AAPL",
  side: "buy" as const,
  type: "market" as const,
  qty: "1",
  time_in_force: "day" as const,
};

Deno.test("OrdersRepository.record completes the key with the order in one statement; a taken-over attempt writes nothing and gets 409", async () => {
  const t = await freshDatabase({ migrated: true });
  const migrations = await loadMigrations();
  const db = new Database({
    url: t.url,
    ...databaseSettings(parseLimits({ DB_QUERY_TIMEOUT_MS: "5000" })),
    serial: t.kind === "embedded",
    onConnect: (sql) => migrate(sql, migrations).then(() => {}),
  });
  try {
    await db.start();
    const repo = new OrdersRepository(db);
    const app = new Hono();
    app.onError((err, c) => {
      const { status, headers, body } = errorParts(err, "t");
      return c.body(body, status as 400, headers);
    });
    app.post(
      "/",
      idempotency({
        db,
        scope: "broker-order",
        owner: () => USER,
        ttlSeconds: 3600,
        lockSeconds: 30,
      }),
      async (c) => {
        const claim = idempotencyClaim(c);
        const lose = c.req.header("x-lose") === "1";
        const body = await claim.settleWith((where) =>
          repo.record(lose ? { ...where, lease: crypto.randomUUID() } : where, {
            userId: USER,
            clientOrderId: `bo-${claim.key}`,
            order: ORDER,
            brokerOrderId: "b-1",
            status: "accepted",
            rejectReason: null,
            settle: { kind: "complete" },
          })
        );
        return c.body(body, 201, { "content-type": "application/json" });
      },
    );
    const call = (key: string, lose = false) =>
      app.fetch(
        new Request("http://fn/", {
          method: "POST",
          headers: { "idempotency-key": key, ...(lose ? { "x-lose": "1" } : {}) },
          body: "{}",
        }),
      );
    const count = async () =>
      (await db.query((sql) => sql`select count(*)::int as n from public.orders`))[0].n;

    const lost = await call("key-lost-0001", true);
    assertEquals(lost.status, 409);
    assertEquals((await lost.json()).error.code, "IDEMPOTENCY_KEY_IN_USE");
    assertEquals(await count(), 0, "the order row rolled back with the failed completion");

    const placed = await call("key-ok-00001");
    assertEquals(placed.status, 201);
    const text = await placed.text();
    assertEquals(JSON.parse(text).clientOrderId, "bo-key-ok-00001");
    const replay = await call("key-ok-00001");
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals(await replay.text(), text, "the stored answer is the exact text answered");
    assertEquals(await count(), 1);
    const [page] = [await repo.list(USER, 10)];
    assertEquals(page.map((o) => o.clientOrderId), ["bo-key-ok-00001"]);
  } finally {
    await db.close();
    await t.close();
  }
});
