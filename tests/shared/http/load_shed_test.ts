import { Hono } from "hono";
import { assert, assertEquals } from "@std/assert";
import { errorParts } from "../../../shared/errors.ts";
import { loadShed } from "../../../shared/http/load_shed.ts";

Deno.test("loadShed() answers 503 OVERLOADED with Retry-After past its bound and runs nothing", async () => {
  let shed = 0;
  let ran = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const app = new Hono();
  app.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  app.use(loadShed({ maxInFlight: 2, onShed: () => shed++ }));
  app.get("/", async (c) => {
    ran++;
    await gate;
    return c.text("ok");
  });
  const held = [app.request("/"), app.request("/")];
  await new Promise((r) => setTimeout(r, 10));
  const over = await app.request("/");
  assertEquals(over.status, 503);
  assertEquals((await over.json()).error.code, "OVERLOADED");
  assert(Number(over.headers.get("retry-after")) >= 1);
  assertEquals([shed, ran], [1, 2]);
  release();
  for (const res of await Promise.all(held)) assertEquals(res.status, 200);
  assertEquals((await app.request("/")).status, 200, "capacity returns once requests end");
});
