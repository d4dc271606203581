import { Hono } from "hono";
import { assertEquals } from "@std/assert";
import { bodyDeadline } from "../../../shared/http/body_deadline.ts";
import { bodyLimit } from "../../../shared/http/body_limit.ts";
import { errorParts } from "../../../shared/errors.ts";
import { loadShed } from "../../../shared/http/load_shed.ts";

function app(opts = { timeoutMs: 100, maxBytes: 64 }) {
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(bodyDeadline(opts));
  a.use(loadShed({ maxInFlight: 2 }));
  a.post("/", async (c) => c.json({ got: await c.req.text() }));
  return a;
}

/** A body that sends `first` and then nothing, or fails after it. */
function stalled(first: string, then: "stall" | "fail" = "stall"): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(first));
      if (then === "fail") controller.error(new TypeError("connection reset"));
    },
  });
}

const post = (body: BodyInit) => new Request("http://fn/", { method: "POST", body });

Deno.test("bodyDeadline() passes a whole body on to later readers", async () => {
  const res = await app().fetch(post('{"a":1}'));
  assertEquals(res.status, 200);
  assertEquals(await res.json(), { got: '{"a":1}' });
});

Deno.test("bodyDeadline() answers 408 with Connection: close to a body that stops arriving", async () => {
  const res = await app().fetch(post(stalled("{")));
  assertEquals(res.status, 408);
  assertEquals(res.headers.get("connection"), "close");
  assertEquals((await res.json()).error.code, "BODY_TIMEOUT");
});

Deno.test("bodyDeadline() answers 400 BODY_INCOMPLETE, not an unhandled error, when the client hangs up mid-body", async () => {
  const res = await app().fetch(post(stalled("{", "fail")));
  assertEquals(res.status, 400);
  assertEquals((await res.json()).error.code, "BODY_INCOMPLETE");
});

Deno.test("bodyDeadline() answers 413 past its size, declared or streamed", async () => {
  assertEquals((await app().fetch(post("x".repeat(65)))).status, 413);
  const streamed = new ReadableStream({
    start(c) {
      c.enqueue(new Uint8Array(100));
      c.close();
    },
  });
  assertEquals((await app().fetch(post(streamed))).status, 413);
});

Deno.test("slow senders are not counted as work: load shedding still admits a whole request", async () => {
  const a = app({ timeoutMs: 300, maxBytes: 64 });
  const slow = Array.from({ length: 5 }, () => a.fetch(post(stalled("{"))));
  const res = await a.fetch(post("{}"));
  assertEquals(res.status, 200, "a complete request is served while 5 slow ones wait");
  for (const r of await Promise.all(slow)) {
    assertEquals(r.status, 408);
    await r.body?.cancel();
  }
});

Deno.test("bodyDeadline() serves the body to every later reader, with or without Content-Length, over a socket too", async () => {
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(bodyDeadline({ timeoutMs: 1000, maxBytes: 1024 }));
  a.post("/", bodyLimit(32), async (c) => {
    const text = await c.req.text();
    const again = await c.req.text();
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const json = await c.req.json();
    return c.json({ text, same: text === again, bytes: bytes.length, json });
  });
  const body = '{"note":"é ✓"}';
  const expected = { text: body, same: true, bytes: new TextEncoder().encode(body).length };
  // In-process: declared length, then none.
  const declared: Record<string, string>[] = [{ "content-length": String(expected.bytes) }, {}];
  for (const headers of declared) {
    const res = await a.fetch(new Request("http://fn/", { method: "POST", body, headers }));
    assertEquals(
      await res.json(),
      { ...expected, json: JSON.parse(body) },
      JSON.stringify(headers),
    );
  }
  // Over a socket: fetch declares the length of a string body and streams a stream's (chunked);
  // the route's smaller limit answers 413 either way.
  const server = Deno.serve({ port: 0, onListen() {} }, a.fetch);
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const chunked = () =>
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(body));
          c.close();
        },
      });
    for (const send of [() => body, chunked]) {
      const res = await fetch(url, { method: "POST", body: send() });
      assertEquals(await res.json(), { ...expected, json: JSON.parse(body) });
    }
    const big = "x".repeat(100);
    assertEquals((await fetch(url, { method: "POST", body: big })).status, 413);
    const bigStream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const res = await fetch(url, { method: "POST", body: bigStream });
    assertEquals(res.status, 413);
    await res.body?.cancel();
  } finally {
    await server.shutdown();
  }
});
