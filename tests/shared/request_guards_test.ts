import { Hono } from "hono";
import { z } from "zod";
import { assert, assertEquals } from "@std/assert";
import { bodyLimit } from "../../shared/body_limit.ts";
import { contentType } from "../../shared/content_type.ts";
import { errorParts } from "../../shared/errors.ts";
import { route } from "../../shared/methods.ts";
import { readJson } from "../../shared/validation.ts";

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
