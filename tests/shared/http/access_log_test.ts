/**
 * The standard stack's request id and access log (shared/platform/boot.ts), through a real function:
 * every answer carries `x-request-id` (the caller's when well formed); every request is written
 * to the access log with that id, except an answered CORS preflight.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import brokerOrder from "../../../functions/broker-order/index.ts";
import { bootFunction } from "../../../shared/platform/boot.ts";
import { createLogger } from "../../../shared/logger.ts";
import { createPlatform } from "../../../shared/platform/platform.ts";
import { freshDatabase } from "../../support/db.ts";
import { FRONTEND, testEnv } from "../../support/env.ts";

const URL_ = "http://local/functions/v1/broker-order";

async function withBrokerOrder(
  fn: (
    fetch: (req: Request) => Promise<Response>,
    lines: Record<string, unknown>[],
  ) => Promise<void>,
) {
  const db = await freshDatabase();
  const lines: Record<string, unknown>[] = [];
  const platform = await createPlatform(
    testEnv(db.url, {
      BROKER_API_URL: "http://127.0.0.1:9",
      BROKER_API_KEY_ID: "key",
      BROKER_API_SECRET_KEY: "secret",
    }),
    { log: createLogger({ write: (line) => lines.push(JSON.parse(line)) }) },
  );
  try {
    const { fetch } = await bootFunction(brokerOrder, platform);
    lines.length = 0;
    await fn(async (req) => await fetch(req), lines);
  } finally {
    await platform.close();
    await db.close();
  }
}

const preflight = (origin: string, id?: string) =>
  new Request(URL_, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, idempotency-key",
      ...(id ? { "x-request-id": id } : {}),
    },
  });

Deno.test("an answered preflight carries the request id and writes no access line; a refused one is written", async () => {
  await withBrokerOrder(async (fetch, lines) => {
    const ok = await fetch(preflight(FRONTEND, "pf-id-0001"));
    assertEquals(ok.status, 204);
    assertEquals(ok.headers.get("x-request-id"), "pf-id-0001");
    assertEquals(ok.headers.get("access-control-allow-origin"), FRONTEND);
    assertEquals(lines.filter((l) => l.msg === "request"), [], "no line for an answered preflight");

    const refused = await fetch(preflight("https://evil.example"));
    assertEquals(refused.status, 403);
    await refused.body?.cancel();
    const id = refused.headers.get("x-request-id")!;
    assertMatch(id, /^[0-9a-f-]{36}$/);
    const written = lines.filter((l) => l.msg === "request");
    assertEquals(written.length, 1);
    assertEquals(written[0].status, 403);
    assertEquals(written[0].requestId, id, "the line names the id the caller was given");
  });
});

Deno.test("answered preflights carry one request id each: the caller's when well formed, else a new one", async () => {
  await withBrokerOrder(async (fetch, lines) => {
    const answers = [
      await fetch(preflight(FRONTEND, "pf-given-1")),
      await fetch(preflight(FRONTEND)),
      await fetch(preflight(FRONTEND, "not a token!")),
      await fetch(preflight(FRONTEND)),
    ];
    for (const a of answers) assertEquals(a.status, 204);
    const ids = answers.map((a) => a.headers.get("x-request-id")!);
    assertEquals(ids[0], "pf-given-1");
    for (const id of ids.slice(1)) assertMatch(id, /^[0-9a-f-]{36}$/);
    assertEquals(new Set(ids).size, 4, "no answer shares or accumulates another's id");
    assertEquals(
      [...answers[3].headers.keys()].sort(),
      [
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-allow-origin",
        "access-control-max-age",
        "vary",
        "x-request-id",
      ],
    );
    assertEquals(lines.filter((l) => l.msg === "request"), []);
  });
});

Deno.test("every other answer, error or not, carries the request id it is logged under", async () => {
  await withBrokerOrder(async (fetch, lines) => {
    const unauthorized = await fetch(
      new Request(URL_, { headers: { origin: FRONTEND, "x-request-id": "caller-id-42" } }),
    );
    assertEquals(unauthorized.status, 401);
    assertEquals(unauthorized.headers.get("x-request-id"), "caller-id-42");
    assertEquals((await unauthorized.json()).error.requestId, "caller-id-42");
    const missing = await fetch(
      // (`/{id}` is an order now: a route that is not one has two segments.)
      new Request(`${URL_}/no/where`, { headers: { "x-request-id": "a b" } }),
    );
    assertEquals(missing.status, 404);
    await missing.body?.cancel();
    const replaced = missing.headers.get("x-request-id")!;
    assertMatch(replaced, /^[0-9a-f-]{36}$/, "a malformed caller id is replaced");
    const written = lines.filter((l) => l.msg === "request");
    assertEquals(written.map((l) => [l.status, l.requestId, l.method]), [
      [401, "caller-id-42", "GET"],
      [404, replaced, "GET"],
    ]);
    assert(written.every((l) => typeof l.durationMs === "number"));
  });
});

Deno.test("a function's preflight allows exactly the methods its routes answer (no second list to keep in step)", async () => {
  await withBrokerOrder(async (fetch) => {
    const ok = await fetch(preflight(FRONTEND));
    const allowed = ok.headers.get("access-control-allow-methods")!.split(", ").sort();
    // broker-order routes GET and POST on "/", POST on "/sync", GET and DELETE on "/{id}".
    assertEquals(allowed, ["DELETE", "GET", "OPTIONS", "POST"]);
  });
});
