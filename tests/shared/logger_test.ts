import { assert, assertEquals } from "@std/assert";
import { createLogger, LineBatcher, redact } from "../../shared/logger.ts";

Deno.test("redact() hides credential fields and secret-looking values", () => {
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
  const out = JSON.stringify(redact({
    authorization: "Bearer abc.def.ghi",
    headers: { Authorization: "x", apikey: "k", cookie: "c" },
    password: "hunter2",
    message:
      `failed with Bearer abc123 and ${jwt} and whsec_abc123 and sk_live_abc and postgres://u:pw@db/x`,
    nested: [{ refresh_token: "r" }],
    ok: "plain",
  }));
  for (
    const secret of [
      "abc.def.ghi",
      "hunter2",
      "abc123",
      jwt,
      "whsec_abc123",
      "sk_live_abc",
      ":pw@",
      '"r"',
      '"k"',
      '"c"',
    ]
  ) {
    assert(!out.includes(secret), `leaked ${secret}: ${out}`);
  }
  assert(out.includes("plain"));
  assert(out.includes("postgres://u:[redacted]@db/x"));
});

Deno.test("createLogger() writes one JSON line per call with its base fields", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l), base: { fn: "status" } }).child({
    instance: "a",
  });
  log.info("request", { requestId: "r1", status: 200 });
  assertEquals(lines.length, 1);
  const rec = JSON.parse(lines[0]);
  assertEquals([rec.level, rec.msg, rec.fn, rec.instance, rec.requestId, rec.status], [
    "info",
    "request",
    "status",
    "a",
    "r1",
    200,
  ]);
});

Deno.test("LineBatcher writes a line at once, then holds the lines of the next window and writes them together, in order", async () => {
  const writes: string[] = [];
  const decoder = new TextDecoder();
  const batcher = new LineBatcher((bytes) => {
    writes.push(decoder.decode(bytes));
    return bytes.length;
  }, 30);
  batcher.write("a");
  assertEquals(writes, ["a\n"], "nothing written lately: at once");
  batcher.write("b");
  batcher.write("c");
  assertEquals(writes.length, 1, "held within the window");
  await new Promise((r) => setTimeout(r, 60));
  assertEquals(writes, ["a\n", "b\nc\n"]);
  batcher.write("d");
  batcher.write("warning", true);
  assertEquals(
    writes.slice(2).join(""),
    "d\nwarning\n",
    "a warning goes at once, after what was held",
  );
  await new Promise((r) => setTimeout(r, 100));
  batcher.write("e");
  assertEquals(writes.at(-1), "e\n", "a quiet window ends: the next line goes at once");
  batcher.flush();
});

Deno.test("LineBatcher writes whole lines of at most 4096 bytes per write and finishes partial writes", () => {
  const lines = Array.from({ length: 40 }, (_, i) => `${i}`.padEnd(300, "x"));
  const long = "L".repeat(5000);
  const all = ["first", ...lines.slice(0, 20), long, ...lines.slice(20)];
  const decoder = new TextDecoder();
  // A sink that takes everything: each write is whole lines, within 4096 bytes unless one line
  // is longer (it goes alone).
  const writes: string[] = [];
  const whole = new LineBatcher((bytes) => {
    writes.push(decoder.decode(bytes));
    return bytes.length;
  }, 1000);
  for (const line of all) whole.write(line);
  whole.flush();
  assertEquals(writes.join(""), all.join("\n") + "\n");
  for (const w of writes) {
    assert(w.endsWith("\n"), "whole lines");
    assert(w.length <= 4096 || w === long + "\n", `${w.length} bytes`);
  }
  assert(writes.length > 3);
  // A pipe may take only part of a write: the rest follows.
  const taken: Uint8Array[] = [];
  const partial = new LineBatcher((bytes) => {
    const n = Math.min(bytes.length, 1000);
    taken.push(bytes.slice(0, n));
    return n;
  }, 1000);
  for (const line of all) partial.write(line);
  partial.flush();
  assertEquals(decoder.decode(new Uint8Array(taken.flatMap((w) => [...w]))), all.join("\n") + "\n");
});

Deno.test("lines held on stdout are written when the process exits or dies of an uncaught error", async () => {
  const logger = new URL("../../shared/logger.ts", import.meta.url).href;
  for (const end of ["Deno.exit(0)", "throw new Error('boom')"]) {
    const script = `import { createLogger } from "${logger}";
      const log = createLogger();
      for (let i = 0; i < 100; i++) log.info("line", { i });
      ${end};`;
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", script],
      stdout: "piped",
      stderr: "null",
    }).output();
    const lines = new TextDecoder().decode(stdout).split("\n").filter(Boolean);
    assertEquals(lines.map((l) => JSON.parse(l).i), Array.from({ length: 100 }, (_, i) => i), end);
  }
});
