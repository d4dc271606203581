import { Hono } from "hono";
import { z } from "zod";
import { assert, assertEquals } from "@std/assert";
import { bodyLimit } from "../../../shared/http/body_limit.ts";
import { contentType } from "../../../shared/http/content_type.ts";
import {
  DatabaseBusy,
  errorParts,
  Unauthorized,
  ValidationFailed,
} from "../../../shared/errors.ts";
import { route } from "../../../shared/http/route.ts";
import { readJson, validate } from "../../../shared/http/validation.ts";

function app() {
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  const Schema = z.strictObject({ name: z.string().max(10), n: z.number().int().positive() });
  route(a, "/", {
    GET: [(c) => c.json({ ok: true })],
    POST: [
      bodyLimit(64),
      contentType("application/json"),
      async (c) => c.json(await readJson(c, Schema)),
    ],
  });
  return a;
}

const post = (
  body: BodyInit,
  headers: Record<string, string> = { "content-type": "application/json" },
) => app().fetch(new Request("http://fn/", { method: "POST", body, headers }));

Deno.test("route() answers 405 with Allow to any other method", async () => {
  for (const method of ["PUT", "DELETE", "PATCH"]) {
    const res = await app().fetch(new Request("http://fn/", { method }));
    assertEquals(res.status, 405);
    assertEquals(res.headers.get("allow"), "GET, POST");
    assertEquals((await res.json()).error.code, "METHOD_NOT_ALLOWED");
  }
});

Deno.test("bodyLimit() answers 413 to a body over the limit, declared or streamed", async () => {
  assertEquals((await post(JSON.stringify({ name: "x".repeat(100), n: 1 }))).status, 413);
  const stream = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode("{" + " ".repeat(200) + "}"));
      c.close();
    },
  });
  assertEquals((await post(stream)).status, 413);
});

Deno.test("contentType() answers 415 to a body that is not JSON, and accepts a charset", async () => {
  assertEquals((await post("{}", { "content-type": "text/plain" })).status, 415);
  assertEquals((await post("{}", {})).status, 415);
  assertEquals(
    (await post('{"name":"a","n":1}', { "content-type": "application/json; charset=utf-8" }))
      .status,
    200,
  );
});

Deno.test("readJson() answers 400 to broken JSON and lists the issues of invalid input", async () => {
  const broken = await post("{not json");
  assertEquals(broken.status, 400);
  assertEquals((await broken.json()).error.code, "MALFORMED_JSON");
  const invalid = await post(JSON.stringify({ name: 5, n: -1, extra: true }));
  assertEquals(invalid.status, 400);
  const err = (await invalid.json()).error;
  assertEquals(err.code, "VALIDATION_FAILED");
  const paths = err.issues.map((i: { path: string }) => i.path).sort();
  assert(paths.includes("name") && paths.includes("n"), JSON.stringify(err.issues));
  assert(
    err.issues.some((i: { message: string }) => /extra|unrecognized/i.test(i.message)),
    "unknown keys are named",
  );
});

Deno.test("errorParts() never leaks an unknown error's message", () => {
  const { status, body } = errorParts(new Error("relation secret_table does not exist"), "rid");
  assertEquals(status, 500);
  assert(!body.includes("secret_table"));
  assertEquals(JSON.parse(body).error.requestId, "rid");
});

Deno.test("a refusal (4xx) captures no stack, a 5xx keeps its own, and the stack limit is left as it was", () => {
  const limit = Error.stackTraceLimit;
  const refused = new Unauthorized();
  assertEquals(refused.stack, "Unauthorized: Missing or invalid credentials.");
  assertEquals([refused.status, refused.name, refused instanceof Error], [
    401,
    "Unauthorized",
    true,
  ]);
  assertEquals(Error.stackTraceLimit, limit);
  const busy = new DatabaseBusy("test");
  assert(busy.stack!.split("\n").length > 1, "a 5xx has frames");
  assertEquals(Error.stackTraceLimit, limit);
  assertEquals(JSON.parse(errorParts(refused, "r").body).error.code, "UNAUTHORIZED");
});

Deno.test("readJson() answers 400 naming the path to a NUL character or an unpaired surrogate, in a value or a key", async () => {
  const cases: [string, string, RegExp][] = [
    ['{"name":"a\\u0000b","n":1}', "name", /NUL/],
    ['{"name":"\\ud800","n":1}', "name", /surrogate/],
    ['{"name":"x\\udfff","n":1}', "name", /surrogate/],
    ['{"name":"ok","n":1,"\\u0000":1}', "(root)", /key .*NUL/],
  ];
  for (const [body, path, message] of cases) {
    const res = await post(body);
    assertEquals(res.status, 400, body);
    const err = (await res.json()).error;
    assertEquals(err.code, "VALIDATION_FAILED");
    assert(
      err.issues.some((i: { path: string; message: string }) =>
        i.path === path && message.test(i.message)
      ),
      `${body}: ${JSON.stringify(err.issues)}`,
    );
  }
  // Paired surrogates (an emoji) are text like any other.
  assertEquals((await post('{"name":"\\ud83d\\ude00","n":1}')).status, 200);
});

Deno.test("readJson() refuses a number a double cannot hold exactly, and keeps every exact spelling", async () => {
  const app = new Hono();
  app.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  app.post("/", async (c) => c.json(await readJson(c, z.strictObject({ x: z.number() }))));
  const send = (x: string) =>
    app.fetch(new Request("http://fn/", { method: "POST", body: `{"x":${x}}` }));
  for (
    const x of [
      "9999999.999999999",
      "100000000.0000000001",
      "1e400",
      "-1e400",
      "0.1000000000000000055511151231257827",
    ]
  ) {
    const res = await send(x);
    assertEquals(res.status, 400, x);
    const err = (await res.json()).error;
    assertEquals(err.issues[0].path, "x", x);
  }
  for (
    const [x, value] of [
      ["1.50", 1.5],
      ["15e-1", 1.5],
      ["1E2", 100],
      ["-0", 0],
      ["0.1", 0.1],
      ["123456.789", 123456.789],
      ["1.7976931348623157e308", Number.MAX_VALUE],
      ["5e-324", 5e-324],
    ] as const
  ) {
    const res = await send(x);
    assertEquals(res.status, 200, x);
    assertEquals((await res.json()).x, value, x);
  }
});

Deno.test("readJson() answers 400, not a crash, to a body nested past what the runtime parses", async () => {
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.post("/", async (c) => c.json(await readJson(c, z.unknown())));
  const res = await a.fetch(
    new Request("http://fn/", { method: "POST", body: "[".repeat(50_000) + "]".repeat(50_000) }),
  );
  assertEquals(res.status, 400);
  assertEquals((await res.json()).error.code, "MALFORMED_JSON");
});

Deno.test("validate() answers 400 to a NUL character in a query value", () => {
  const Query = z.object({ before: z.string().optional() });
  let thrown: unknown;
  try {
    validate(Query, { before: "2026-01-01\u0000" });
  } catch (err) {
    thrown = err;
  }
  assert(thrown instanceof ValidationFailed, String(thrown));
  assertEquals(thrown.status, 400);
  assertEquals(thrown.issues?.[0].path, "before");
  assertEquals(validate(Query, { before: "2026-01-01" }), { before: "2026-01-01" });
});
