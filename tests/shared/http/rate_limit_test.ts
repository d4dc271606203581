import { databaseSettings } from "../../../shared/platform/platform.ts";
import { Hono } from "hono";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { Database } from "../../../shared/db/db.ts";
import { errorParts, HttpError } from "../../../shared/errors.ts";
import { idempotency } from "../../../shared/http/idempotency.ts";
import { parseLimits } from "../../../shared/limits.ts";
import { deferRateLimit, rateLimit, RateLimiter } from "../../../shared/http/rate_limit.ts";
import { onServer, withMigratedDatabase } from "../../support/db.ts";

function withDb(fn: (db: Database, url: string) => Promise<void>) {
  return withMigratedDatabase((db, t) => fn(db, t.url));
}

Deno.test("rateLimit() sends the RateLimit fields on every answer and 429 with Retry-After past the quota", () =>
  withDb(async (db) => {
    const app = new Hono();
    app.onError((err, c) => {
      const { status, headers, body } = errorParts(err, "t");
      return c.body(body, status as 400, headers);
    });
    app.use(
      rateLimit({
        db,
        policy: "demo",
        quota: 3,
        windowSeconds: 60,
        key: (c) => c.req.header("x-user"),
      }),
    );
    app.get("/", (c) => c.text("ok"));
    const call = (user: string) =>
      app.fetch(new Request("http://fn/", { headers: { "x-user": user } }));
    for (let i = 0; i < 3; i++) {
      const res = await call("a");
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("ratelimit-policy"), '"demo";q=3;w=60');
      // t: whole seconds until the oldest hit leaves the window (59 once a second passed).
      assertMatch(res.headers.get("ratelimit")!, new RegExp(`^"demo";r=${2 - i};t=(59|60)$`));
    }
    const limited = await call("a");
    assertEquals(limited.status, 429);
    assertEquals((await limited.json()).error.code, "RATE_LIMITED");
    assert(Number(limited.headers.get("retry-after")) >= 59);
    assertMatch(limited.headers.get("ratelimit")!, /^"demo";r=0;t=(59|60)$/);
    assertEquals((await call("b")).status, 200, "another key has its own quota");
  }));

Deno.test("the sliding log never lets more than the quota through in any window", () =>
  withDb(async (db) => {
    const quota = 4;
    const windowMs = 1_000;
    const limiter = new RateLimiter(db, { policy: "slide", quota, windowSeconds: windowMs / 1000 });
    // Each allowed hit was counted at a database time between its send and its answer.
    const allowed: { sent: number; answered: number }[] = [];
    const started = performance.now();
    while (performance.now() - started < 1_500) {
      const sent = performance.now();
      if ((await limiter.hit("k")).allowed) allowed.push({ sent, answered: performance.now() });
      await new Promise((r) => setTimeout(r, 25));
    }
    // The log keeps 60 buckets per window, so it looks back at least a window less one bucket.
    // Two allowed hits whose send-to-answer span is shorter than that were surely counted in one
    // such window: from each allowed hit on, at most `quota` may fall in it. (A slower machine
    // only stretches the spans, never makes this fail; a fixed window that resets lets a second
    // burst through right after the first, which this catches.)
    const lookBack = windowMs - windowMs / 60;
    for (const [i, first] of allowed.entries()) {
      const inWindow = allowed.slice(i).filter((h) => h.answered - first.sent < lookBack).length;
      assert(inWindow <= quota, `${inWindow} allowed within ${lookBack} ms of hit ${i}`);
    }
    // And it slides: once the first hits leave the window, hits are allowed again.
    assert(allowed.length > quota, `allowed ${allowed.length} in 1.5 s`);
  }));

Deno.test({
  name: "limits hold across instances: two pools over one database share one quota",
  ...onServer,
  fn: () =>
    withDb(async (db, url) => {
      const other = new Database({ url, ...databaseSettings(parseLimits({})) });
      try {
        await other.start();
        const a = new RateLimiter(db, { policy: "shared", quota: 10, windowSeconds: 60 });
        const b = new RateLimiter(other, { policy: "shared", quota: 10, windowSeconds: 60 });
        const results = await Promise.all(
          Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).hit("user")),
        );
        assertEquals(results.filter((r) => r.allowed).length, 10);
      } finally {
        await other.close();
      }
    }),
});

Deno.test("purge() drops a policy's idle keys and keeps the live ones and other policies'", () =>
  withDb(async (db) => {
    const short = new RateLimiter(db, { policy: "short", quota: 5, windowSeconds: 1 });
    const long = new RateLimiter(db, { policy: "long", quota: 5, windowSeconds: 60 });
    await short.hit("idle");
    await long.hit("idle");
    await new Promise((r) => setTimeout(r, 1100));
    await short.hit("live");
    assertEquals(await short.purge(1_000), 1);
    const keys = await db.query((sql) => sql`select key from internal.rate_limits order by key`);
    assertEquals(keys.map((k) => k.key), ["long:idle", "short:live"]);
  }));

Deno.test("a very large quota keeps the stored state small", () =>
  withDb(async (db) => {
    const limiter = new RateLimiter(db, { policy: "bulk", quota: 1_000_000, windowSeconds: 60 });
    for (let i = 0; i < 200; i++) assert((await limiter.hit("k")).allowed);
    const [row] = await db.query((sql) =>
      sql`select cardinality(buckets)::int as n from internal.rate_limits where key = 'bulk:k'`
    );
    assert(row.n <= 60, `buckets stored: ${row.n}`);
  }));

Deno.test("deferRateLimit() counts in the idempotency claim's statement, counts a request refused before the claim, and answers 429 past the quota", () =>
  withDb(async (db) => {
    const app = new Hono();
    app.onError((err, c) => {
      const { status, headers, body } = errorParts(err, "t");
      return c.body(body, status as 400, headers);
    });
    let runs = 0;
    app.post(
      "/",
      deferRateLimit({
        db,
        policy: "claimed",
        quota: 3,
        windowSeconds: 60,
        key: (c) => c.req.header("x-user"),
      }),
      async function validBody(c, next) {
        if ((await c.req.text()) === "bad") {
          throw new HttpError(400, "VALIDATION_FAILED", "bad body");
        }
        await next();
      },
      idempotency({ db, scope: "t", owner: () => "o", ttlSeconds: 3600, lockSeconds: 30 }),
      (c) => {
        runs++;
        return c.json({ ok: true }, 201);
      },
    );
    const call = (body: string, key = crypto.randomUUID()) =>
      app.fetch(
        new Request("http://fn/", {
          method: "POST",
          headers: { "x-user": "a", "idempotency-key": key },
          body,
        }),
      );
    const first = await call("ok");
    assertEquals(first.status, 201);
    // t counts whole seconds until the oldest hit leaves the 60 s window: 60, or 59 once a
    // second boundary passed between the first hit and this answer.
    assertMatch(first.headers.get("ratelimit")!, /^"claimed";r=2;t=(59|60)$/);
    const bad = await call("bad");
    assertEquals(bad.status, 400, "a bad request is refused for what it is");
    assertMatch(bad.headers.get("ratelimit")!, /^"claimed";r=1;t=(59|60)$/, "and still counted");
    assertEquals((await call("ok")).status, 201);
    const limited = await call("ok");
    assertEquals(limited.status, 429);
    assertMatch(limited.headers.get("ratelimit")!, /^"claimed";r=0;t=(59|60)$/);
    const badOver = await call("bad");
    assertEquals(badOver.status, 429, "past the quota even a bad request is 429, as before");
    assertEquals(runs, 2);
    const keys = await db.query((sql) =>
      sql`select count(*)::int as n from internal.idempotency_keys`
    );
    assertEquals(keys[0].n, 2, "a limited request claims no key");
  }));

Deno.test("counters are the platform's own: two platforms in one process never share them", () =>
  withDb(async (db) => {
    const mine = new Map();
    const theirs = new Map();
    const a = new RateLimiter(db, { policy: "stats", quota: 1, windowSeconds: 60, stats: mine });
    const b = new RateLimiter(db, { policy: "stats", quota: 1, windowSeconds: 60, stats: theirs });
    const again = new RateLimiter(db, {
      policy: "stats",
      quota: 1,
      windowSeconds: 60,
      stats: mine,
    });
    await a.hit("k1");
    await again.hit("k1"); // the same platform, the same policy: one entry, limited now
    assertEquals(mine.get("stats"), { allowed: 1, limited: 1 });
    assertEquals(theirs.get("stats"), { allowed: 0, limited: 0 }, "the other counted nothing");
    await b.hit("k2");
    assertEquals(theirs.get("stats"), { allowed: 1, limited: 0 });
  }));
