/**
 * ToolRegistry: the allowlist is a Map (prototype names are unknown tools), parameters reach a
 * handler only validated, the deadline answers even when a handler ignores its signal, and a
 * result that is not finite or too large is never answered.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { z } from "zod";
import { type Tool, ToolRegistry } from "../../../functions/tools/registry.ts";
import { HttpError } from "../../../shared/errors.ts";

/** A tool that records what reached it and answers what the test says. */
function probe(answer: (n: number) => object, deadlineMs = 1_000) {
  const seen: unknown[] = [];
  const tool: Tool = {
    name: "test.echo",
    summary: "Answers what the test says.",
    params: z.strictObject({ n: z.number().int().min(0).max(10) }),
    deadlineMs,
    run(params, ctx) {
      seen.push(params);
      return Promise.resolve(answer((params as { n: number }).n)).then((v) => {
        ctx.signal.throwIfAborted();
        return v;
      });
    },
  };
  return { tool, seen };
}

Deno.test("ToolRegistry: prototype keys and unknown names are 404 and reach no handler", async () => {
  const { tool, seen } = probe((n) => ({ n }));
  const registry = new ToolRegistry([tool], { maxOutputBytes: 1024 });
  for (
    const name of ["__proto__", "constructor", "toString", "valueOf", "../test.echo", "TEST.ECHO"]
  ) {
    const err = await assertRejects(() => registry.execute(name, { n: 1 }), HttpError) as HttpError;
    assertEquals([err.status, err.code], [404, "TOOL_NOT_FOUND"], name);
  }
  const bad = await assertRejects(() => registry.execute("test.echo", { n: 1, x: 2 }), HttpError);
  assertEquals((bad as HttpError).code, "VALIDATION_FAILED");
  assertEquals(seen, []);
  assertEquals(await registry.execute("test.echo", { n: 3 }), '{"n":3}');
  assertEquals(seen, [{ n: 3 }]);
});

Deno.test("ToolRegistry: the listing carries each tool's JSON Schema, computed at start", () => {
  const registry = new ToolRegistry([probe((n) => ({ n })).tool], { maxOutputBytes: 1024 });
  const [listed] = registry.list();
  assertEquals(listed.name, "test.echo");
  assertEquals(listed.parameters.additionalProperties, false);
  assertEquals((listed.parameters.properties as Record<string, unknown>).n, {
    type: "integer",
    minimum: 0,
    maximum: 10,
  });
});

Deno.test("ToolRegistry: a handler that ignores its signal is still answered 504 at the deadline", async () => {
  let release: () => void = () => {};
  const hang = new Promise<object>((r) => release = () => r({ late: true }));
  const { tool } = probe(() => hang, 100);
  const registry = new ToolRegistry([tool], { maxOutputBytes: 1024 });
  try {
    const err = await assertRejects(() => registry.execute("test.echo", { n: 1 }), HttpError);
    assertEquals([(err as HttpError).status, (err as HttpError).code], [504, "TOOL_TIMEOUT"]);
  } finally {
    release();
  }
});

Deno.test("ToolRegistry: a non-finite or oversized result is a 500, never answered", async () => {
  for (const answer of [{ v: NaN }, { v: Infinity }, { v: "x".repeat(2_000) }]) {
    const registry = new ToolRegistry([probe(() => answer).tool], { maxOutputBytes: 1024 });
    const err = await assertRejects(() => registry.execute("test.echo", { n: 1 }));
    assert(!(err instanceof HttpError), "an unknown error: the boundary answers a generic 500");
  }
});

Deno.test("ToolRegistry: refuses a duplicate name or a missing deadline at start", () => {
  const { tool } = probe((n) => ({ n }));
  let threw = 0;
  for (const tools of [[tool, tool], [{ ...tool, deadlineMs: 0 }]]) {
    try {
      new ToolRegistry(tools, { maxOutputBytes: 1024 });
    } catch {
      threw++;
    }
  }
  assertEquals(threw, 2);
});
