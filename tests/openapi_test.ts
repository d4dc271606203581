/**
 * docs/openapi.json is never stale (it is exactly what `npm run openapi` writes from the route
 * table and the functions' schemas), it is a well-formed OpenAPI 3.1 document whose schemas Ajv's
 * 2020-12 dialect compiles, and the response check (tests/support/openapi.ts) refuses what
 * differs from it: an undocumented status, a body off its schema, a missing required header.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { OPENAPI_FILE, renderOpenApi } from "../local/openapi/generate.ts";
import { ROUTES } from "../local/openapi/routes.ts";
import { assertMatchesOpenApi } from "./support/openapi.ts";

const committed = await Deno.readTextFile(OPENAPI_FILE);
const doc = JSON.parse(committed);

Deno.test("docs/openapi.json is what `npm run openapi` generates (run it and commit the file)", () => {
  assert(committed === renderOpenApi(), "docs/openapi.json is stale: run `npm run openapi`");
});

Deno.test("the document is OpenAPI 3.1 with one operation per route of the table", () => {
  assertEquals(doc.openapi, "3.1.0");
  const operations = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)).sort();
  assertEquals(
    operations,
    ROUTES.map((r) => `${r.method} /${r.fn}${r.path === "/" ? "" : r.path}`).sort(),
  );
  for (const scheme of ["userJwt", "serviceKey", "serviceApikey", "stripeSignature"]) {
    assert(doc.components.securitySchemes[scheme], scheme);
  }
  for (
    const header of [
      "XRequestId",
      "RetryAfter",
      "RateLimit",
      "RateLimitPolicy",
      "IdempotentReplayed",
    ]
  ) {
    assert(doc.components.headers[header], header);
  }
  assertEquals(doc.components.parameters.IdempotencyKey.name, "Idempotency-Key");
});

interface Operation {
  responses: Record<string, { headers: Record<string, unknown> }>;
}

Deno.test("every 429 and 503 documents Retry-After, and every answer x-request-id", () => {
  for (
    const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Operation>>)
  ) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, res] of Object.entries(op.responses)) {
        assert(res.headers["x-request-id"], `${method} ${path} ${status}: x-request-id`);
        if (status === "429" || status === "503") {
          assert(res.headers["Retry-After"], `${method} ${path} ${status}: Retry-After`);
        }
      }
    }
  }
});

const answer = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "x-request-id": "r-1", ...headers },
  });

Deno.test("the response check refuses an undocumented status, a body off its schema and a missing header", async () => {
  await assertMatchesOpenApi("GET", "/status", 200, answer(200, { status: "ok" }));
  await assertRejects(
    () => assertMatchesOpenApi("GET", "/status", 418, answer(418, { status: "ok" })),
    Error,
    "not documented",
  );
  await assertRejects(
    () => assertMatchesOpenApi("GET", "/status", 200, answer(200, { status: "fine" })),
    Error,
    "does not match",
  );
  await assertRejects(
    () =>
      assertMatchesOpenApi(
        "GET",
        "/status",
        200,
        new Response('{"status":"ok"}', { headers: { "content-type": "application/json" } }),
      ),
    Error,
    "x-request-id is required",
  );
  const error = { error: { code: "DB_UNAVAILABLE", message: "down", requestId: "r-1" } };
  await assertRejects(
    () => assertMatchesOpenApi("GET", "/market-data", 503, answer(503, error)),
    Error,
    "Retry-After is required",
  );
  await assertMatchesOpenApi(
    "GET",
    "/market-data",
    503,
    answer(503, error, { "retry-after": "2" }),
  );
  await assertRejects(
    () =>
      assertMatchesOpenApi(
        "GET",
        "/market-data",
        503,
        answer(503, { error: { ...error.error, stack: "at x" } }, { "retry-after": "2" }),
      ),
    Error,
    "does not match",
  );
});
