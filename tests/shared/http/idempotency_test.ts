import { databaseSettings } from "../../../shared/platform/platform.ts";
import { Hono } from "hono";
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { Database } from "../../../shared/db/db.ts";
import { errorParts } from "../../../shared/errors.ts";
import {
  canonicalJson,
  idempotency,
  type IdempotencyClaim,
  idempotencyClaim,
  parseIdempotencyKey,
  purgeExpiredKeys,
  requestFingerprint,
} from "../../../shared/http/idempotency.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { sha256 } from "../../../shared/sha256.ts";
import { loadMigrations, migrate } from "../../../local/migrate.ts";
import { freshDatabase, onServer } from "../../support/db.ts";
import { settledWithin } from "../../support/wait.ts";

interface Harness {
  db: Database;
  call(
    body: unknown,
    init?: { key?: string | null; user?: string; mode?: string; path?: string },
  ): Promise<Response>;
  /** Each run of the handler: the claim it saw. */
  runs: IdempotencyClaim[];
  /** Effects committed by the handler. */
  effects(): Promise<number>;
  /** Holds handlers in mode "hold" until `release()`. */
  hold(): { release(): void };
}

/** A tiny app behind idempotency(): the handler writes an effect and completes in one transaction. */
async function withApp(fn: (h: Harness) => Promise<void>, lockSeconds = 1) {
  const t = await freshDatabase({ migrated: true });
  const migrations = await loadMigrations();
  const db = new Database({
    url: t.url,
    ...databaseSettings(parseLimits({ DB_QUERY_TIMEOUT_MS: "5000" })),
    serial: t.kind === "embedded",
    onConnect: (sql) => migrate(sql, migrations).then(() => {}),
  });
  const runs: IdempotencyClaim[] = [];
  let gate: Promise<void> | undefined;
  try {
    await db.start();
    await db.query((sql) => sql`create table public.effects (id serial primary key, key text)`);
    const app = new Hono();
    app.onError((err, c) => {
      const { status, headers, body } = errorParts(err, "req-1");
      return c.body(body, status as 400, headers);
    });
    app.post(
      "/*",
      idempotency({
        db,
        scope: "test",
        owner: (c) => c.req.header("x-user") ?? "user-a",
        ttlSeconds: 3600,
        lockSeconds,
      }),
      async (c) => {
        const claim = idempotencyClaim(c);
        runs.push(claim);
        const mode = c.req.header("x-mode") ?? "ok";
        if (mode === "hold") await gate;
        if (mode === "release") {
          await claim.release();
          return c.json({ pending: true }, 202);
        }
        const n = await db.transaction(async (tx) => {
          await tx`insert into public.effects (key) values (${claim.key})`;
          await claim.complete(tx, 201, { attempt: claim.attempt, keyId: claim.keyId });
          if (mode === "fail") throw new Error("the handler failed after its writes");
          return claim.attempt;
        });
        return c.json({ attempt: n, keyId: claim.keyId }, 201);
      },
    );
    await fn({
      db,
      runs,
      call: async (body, init = {}) => {
        const headers: Record<string, string> = {
          "content-type": "application/json",
          "x-user": init.user ?? "user-a",
          "x-mode": init.mode ?? "ok",
        };
        if (init.key !== null) headers["idempotency-key"] = init.key ?? "key-00000001";
        return await app.fetch(
          new Request(`http://fn${init.path ?? "/orders"}`, {
            method: "POST",
            headers,
            body: typeof body === "string" ? body : JSON.stringify(body),
          }),
        );
      },
      effects: async () =>
        (await db.query((sql) => sql`select count(*)::int as n from public.effects`))[0].n,
      hold() {
        let release!: () => void;
        gate = new Promise<void>((r) => release = r);
        return { release };
      },
    });
  } finally {
    await db.close();
    await t.close();
  }
}

const keyRows = (db: Database) =>
  db.query((sql) => sql`select * from internal.idempotency_keys order by created_at`);

Deno.test("parseIdempotencyKey() accepts 8-255 of A-Z a-z 0-9 - _ : and the draft's quoted form", () => {
  assertEquals(parseIdempotencyKey("abcd-12:"), "abcd-12:");
  assertEquals(parseIdempotencyKey("A".repeat(255)), "A".repeat(255));
  assertEquals(parseIdempotencyKey('"8e03978e-40d5-43e8"'), "8e03978e-40d5-43e8");
  for (const bad of ["short", "A".repeat(256), "has space!", "é-ééééééé", "key/with/slash", '""']) {
    let code = "";
    try {
      parseIdempotencyKey(bad);
    } catch (err) {
      code = (err as { code: string }).code;
    }
    assertEquals(code, "IDEMPOTENCY_KEY_INVALID", bad);
  }
});

Deno.test("requestFingerprint() ignores key order and whitespace but not values, method or path", async () => {
  const a = await requestFingerprint("POST", "/o", '{"a":1,"b":{"y":2,"x":[1,{"q":1,"p":2}]}}');
  const b = await requestFingerprint(
    "POST",
    "/o",
    '{ "b": {"x":[1,{"p":2,"q":1}], "y":2}, "a":1 }',
  );
  assertEquals(a, b);
  assertMatchHex(a);
  assertNotEquals(
    a,
    await requestFingerprint("POST", "/o", '{"a":2,"b":{"y":2,"x":[1,{"q":1,"p":2}]}}'),
  );
  assertNotEquals(
    a,
    await requestFingerprint("PUT", "/o", '{"a":1,"b":{"y":2,"x":[1,{"q":1,"p":2}]}}'),
  );
  assertNotEquals(
    a,
    await requestFingerprint("POST", "/p", '{"a":1,"b":{"y":2,"x":[1,{"q":1,"p":2}]}}'),
  );
  assertEquals(canonicalJson({ b: [2, 1], a: null }), '{"a":null,"b":[2,1]}');
});

function assertMatchHex(s: string) {
  assert(/^[0-9a-f]{64}$/.test(s), s);
}

Deno.test("idempotency() answers 400 to a missing or malformed key and stores nothing", () =>
  withApp(async (h) => {
    const missing = await h.call({ a: 1 }, { key: null });
    assertEquals(missing.status, 400);
    assertEquals((await missing.json()).error.code, "IDEMPOTENCY_KEY_REQUIRED");
    for (const key of ["short", "x".repeat(256), "not allowed!"]) {
      const res = await h.call({ a: 1 }, { key });
      assertEquals(res.status, 400, key);
      assertEquals((await res.json()).error.code, "IDEMPOTENCY_KEY_INVALID");
    }
    assertEquals(h.runs.length, 0);
    assertEquals((await keyRows(h.db)).length, 0);
  }));

Deno.test("a repeat gets the stored status and body with Idempotent-Replayed: true; the handler runs once", () =>
  withApp(async (h) => {
    const first = await h.call({ symbol: "AAPL", qty: 1 });
    assertEquals(first.status, 201);
    assertEquals(first.headers.get("idempotent-replayed"), null);
    const body = await first.text();
    const again = await h.call({ qty: 1, symbol: "AAPL" }); // same request, keys in another order
    assertEquals(again.status, 201);
    assertEquals(again.headers.get("idempotent-replayed"), "true");
    assertEquals(await again.text(), body);
    assertEquals(h.runs.length, 1);
    assertEquals(await h.effects(), 1);
    const [row] = await keyRows(h.db);
    assertEquals(row.state, "completed");
    assertEquals(row.response_status, 201);
    // 24 h (here: the configured ttl) from the first use.
    const ttl = (Date.parse(row.expires_at) - Date.parse(row.created_at)) / 1000;
    assertEquals(Math.round(ttl), 3600);
  }));

Deno.test("the same key with another body or path is 422 IDEMPOTENCY_KEY_REUSED; keys are per owner", () =>
  withApp(async (h) => {
    assertEquals((await h.call({ qty: 1 })).status, 201);
    const other = await h.call({ qty: 2 });
    assertEquals(other.status, 422);
    assertEquals((await other.json()).error.code, "IDEMPOTENCY_KEY_REUSED");
    const otherPath = await h.call({ qty: 1 }, { path: "/elsewhere" });
    assertEquals(otherPath.status, 422);
    // Another user's identical key is another key.
    const mine = await h.call({ qty: 2 }, { user: "user-b" });
    assertEquals(mine.status, 201);
    assertEquals(mine.headers.get("idempotent-replayed"), null);
    assertEquals(await h.effects(), 2);
  }));

Deno.test("a repeat while the first is in flight is 409 IDEMPOTENCY_KEY_IN_USE with Retry-After", () =>
  withApp(async (h) => {
    const gate = h.hold();
    const first = h.call({ qty: 1 }, { mode: "hold" });
    while (h.runs.length === 0) await new Promise((r) => setTimeout(r, 5));
    const second = await h.call({ qty: 1 });
    assertEquals(second.status, 409);
    assertEquals((await second.json()).error.code, "IDEMPOTENCY_KEY_IN_USE");
    assert(Number(second.headers.get("retry-after")) >= 1);
    gate.release();
    assertEquals((await first).status, 201);
    assertEquals((await h.call({ qty: 1 })).headers.get("idempotent-replayed"), "true");
  }, 30));

Deno.test("the key completes in the handler's transaction: a rollback stores no answer and the retry resumes", () =>
  withApp(async (h) => {
    const failed = await h.call({ qty: 1 }, { mode: "fail" });
    assertEquals(failed.status, 500);
    assertEquals(await h.effects(), 0, "the handler's write rolled back");
    const [row] = await keyRows(h.db);
    assertEquals(row.state, "in_progress", "the completion rolled back with it");
    // Released by the middleware: the retry takes over at once, told it is resuming.
    const retry = await h.call({ qty: 1 });
    assertEquals(retry.status, 201);
    assertEquals(await retry.json(), { attempt: 2, keyId: h.runs[0].keyId });
    assertEquals(h.runs[1].resuming, true);
    assertEquals(await h.effects(), 1);
  }, 30));

Deno.test("a claim left behind by a dead attempt is taken over after the lock; the late attempt cannot complete", () =>
  withApp(async (h) => {
    const gate = h.hold();
    const stale = h.call({ qty: 1 }, { mode: "hold" });
    while (h.runs.length === 0) await new Promise((r) => setTimeout(r, 5));
    assertEquals((await h.call({ qty: 1 })).status, 409, "still within its lock");
    await new Promise((r) => setTimeout(r, 1100)); // lockSeconds = 1
    const takeover = await h.call({ qty: 1 });
    assertEquals(takeover.status, 201);
    assertEquals(h.runs[1].resuming, true);
    assertEquals(h.runs[1].attempt, 2);
    assertEquals(h.runs[1].keyId, h.runs[0].keyId, "one lifetime of the key");
    // The first attempt wakes up: its lease is gone, its transaction rolls back.
    gate.release();
    const late = await stale;
    assertEquals(late.status, 409);
    assertEquals((await late.json()).error.code, "IDEMPOTENCY_KEY_IN_USE");
    assertEquals(await h.effects(), 1);
    const replay = await h.call({ qty: 1 });
    assertEquals(await replay.json(), { attempt: 2, keyId: h.runs[0].keyId });
  }));

Deno.test("a released key is taken over at once by the next request, resuming", () =>
  withApp(async (h) => {
    const pending = await h.call({ qty: 1 }, { mode: "release" });
    assertEquals(pending.status, 202);
    const next = await h.call({ qty: 1 });
    assertEquals(next.status, 201, "not a replay of the pending answer, and not 409");
    assertEquals(next.headers.get("idempotent-replayed"), null);
    assertEquals(h.runs[1].resuming, true);
  }, 30));

Deno.test("an expired key names a new request; purge deletes only expired keys, batch by batch, each once", () =>
  withApp(async (h) => {
    assertEquals((await h.call({ qty: 1 })).status, 201);
    await h.db.query((sql) =>
      sql`update internal.idempotency_keys set expires_at = now() - interval '1 second'`
    );
    const fresh = await h.call({ qty: 2 }); // a different body is fine: the old key is gone
    assertEquals(fresh.status, 201);
    assertNotEquals(h.runs[1].keyId, h.runs[0].keyId);
    assertEquals(h.runs[1].resuming, false);
    for (let i = 0; i < 30; i++) {
      assertEquals((await h.call({ i }, { key: `purge-key-${i}` })).status, 201);
    }
    await h.db.query((sql) =>
      sql`update internal.idempotency_keys set expires_at = now() - interval '1 second'
          where key like 'purge-key-%'`
    );
    const [a, b] = await Promise.all([purgeExpiredKeys(h.db, 7), purgeExpiredKeys(h.db, 50)]);
    const c = await purgeExpiredKeys(h.db, 50);
    assertEquals(a + b + c, 30);
    const left = await keyRows(h.db);
    assertEquals(left.map((r) => r.key), ["key-00000001"]);
  }, 30));

Deno.test({
  name:
    "two purgers at once: the second skips the keys the first holds without waiting, and each key is purged once",
  ...onServer,
  fn: () =>
    withApp(async (h) => {
      for (let i = 0; i < 30; i++) {
        assertEquals((await h.call({ i }, { key: `purge-key-${i}` })).status, 201);
      }
      await h.db.query((sql) =>
        sql`update internal.idempotency_keys set expires_at = now() - interval '1 second'`
      );
      // The first purger's batch stays deleted-but-uncommitted (its rows locked) while the
      // second one runs: the two overlap for certain.
      let holding!: () => void;
      const held = new Promise<void>((r) => holding = r);
      let finish!: () => void;
      const finished = new Promise<void>((r) => finish = r);
      const first = h.db.sql.begin(async (tx) => {
        const [{ n }] = await tx`select internal.idempotency_purge(7) as n`;
        holding();
        await finished;
        return n as number;
      });
      try {
        await held;
        const second = await settledWithin(
          15_000,
          "the second purger (it must skip the first one's keys, not wait for them)",
          purgeExpiredKeys(h.db, 50),
        );
        assertEquals(second, 23, "the second purged every key but the first one's batch");
      } finally {
        finish();
      }
      assertEquals(await first, 7);
      assertEquals(await purgeExpiredKeys(h.db, 50), 0, "nothing left, nothing purged twice");
      assertEquals((await keyRows(h.db)).length, 0);
    }, 30),
});

Deno.test({
  name: "concurrent first requests with one key: exactly one runs, the rest are 409 or its replay",
  ...onServer,
  fn: () =>
    withApp(async (h) => {
      const gate = h.hold();
      const all = Array.from({ length: 20 }, () => h.call({ qty: 1 }, { mode: "hold" }));
      setTimeout(() => gate.release(), 200);
      const res = await Promise.all(all);
      const statuses = res.map((r) => r.status);
      assertEquals(h.runs.length, 1);
      assertEquals(statuses.filter((s) => s === 201).length >= 1, true);
      assert(statuses.every((s) => s === 201 || s === 409), String(statuses));
      assertEquals(await h.effects(), 1);
    }, 30),
});

Deno.test("requestFingerprint() compares numbers as written: literals that round to one double are different requests; spellings of one value are the same", async () => {
  const fp = (n: string) => requestFingerprint("POST", "/o", `{"qty":${n},"x":[${n}]}`);
  const differ: [string, string][] = [
    ["99999999.999999999", "99999999.999999998"],
    ["0.1", "0.10000000000000000001"],
    ["9007199254740993", "9007199254740992"],
    ["1e400", "2e400"], // both Infinity as doubles
    ["1e-400", "0"], // 0 as a double
    ["-1e-400", "1e-400"],
    ["123456789012345678901234567890", "123456789012345678901234567891"],
  ];
  for (const [a, b] of differ) assertNotEquals(await fp(a), await fp(b), `${a} vs ${b}`);
  const same: string[][] = [
    ["1.5", "1.50", "15e-1", "0.15E1"],
    ["100", "1e2", "100.000", "1E+2"],
    ["99999999.999999999", "99999999.9999999990", "9999999999999999.9e-8"],
    ["0", "0.0", "0e10", "-0"],
  ];
  for (const spellings of same) {
    const fps = await Promise.all(spellings.map(fp));
    for (const f of fps) assertEquals(f, fps[0], spellings.join(" = "));
  }
  // A number a double holds exactly keeps the fingerprint it had (keys stored before still match).
  const before = await sha256(`POST\n/o\n{"a":1.5,"b":[100,-0.25,1e+21]}`, "hex");
  assertEquals(await requestFingerprint("POST", "/o", '{"b":[1e2,-0.25,1e21],"a":1.50}'), before);
});
