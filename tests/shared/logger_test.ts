import { assert, assertEquals } from "@std/assert";
import { createLogger, redact } from "../../shared/logger.ts";

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
