import { Hono } from "hono";
import { assert, assertEquals } from "@std/assert";
import { BodyBudget, bodyDeadline } from "../../../shared/http/body_deadline.ts";
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

/** Sends headers announcing `declared` bytes and `sent` of them; the answer and whether the server closed. */
async function rawPost(
  port: number,
  path: string,
  headers: Record<string, string>,
  declared: number,
  sent: string,
  waitMs: number,
): Promise<{ answer: string; closedByServer: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = Object.entries({ host: "127.0.0.1", "content-length": String(declared), ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`).join("");
  await conn.write(new TextEncoder().encode(`POST ${path} HTTP/1.1\r\n${head}\r\n${sent}`));
  let closedByServer = true;
  const timer = setTimeout(() => {
    closedByServer = false;
    conn.close();
  }, waitMs);
  let answer = "";
  const buf = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    answer += new TextDecoder().decode(buf.subarray(0, n));
  }
  clearTimeout(timer);
  if (closedByServer) conn.close();
  return { answer, closedByServer };
}

/** A function-like app: a caller check, then the route's body limit, over a real socket. */
function guardedServer() {
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(bodyDeadline({ timeoutMs: 300, maxBytes: 1 << 20 }));
  a.use(loadShed({ maxInFlight: 8 }));
  a.on(
    "POST",
    "/",
    (c, next) => {
      if (c.req.header("authorization") !== "Bearer ok") {
        return c.json({ error: { code: "UNAUTHORIZED" } }, 401);
      }
      return next();
    },
    bodyLimit(1000),
    async (c) => c.json({ got: (await c.req.text()).length }),
  );
  return Deno.serve({ port: 0, onListen() {} }, a.fetch);
}

Deno.test("the caller is refused before the body is read: the refusal comes while the body is still missing", async () => {
  const server = guardedServer();
  try {
    // Before, the body was read first, so each of these waited for the 408 (300 ms) instead.
    for (
      const [path, headers, status] of [
        ["/", {}, "401"],
        ["/", { authorization: "Bearer wrong" }, "401"],
        ["/", { authorization: "Bearer ok" }, "413"],
        ["/nowhere", {}, "404"],
      ] as const
    ) {
      const declared = status === "413" ? 5_000 : 900;
      const { answer } = await rawPost(server.addr.port, path, headers, declared, "", 500);
      assert(answer.startsWith(`HTTP/1.1 ${status}`), `${status}: ${answer.slice(0, 40)}`);
      assert(
        /connection: close/i.test(answer),
        `${status}: the unread body's connection is not reused`,
      );
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("BodyBudget: bodies past the instance's budget are refused 503 with Retry-After; bodiless requests still served; the budget comes back", async () => {
  const budget = new BodyBudget(100);
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "t");
    return c.body(body, status as 400, headers);
  });
  a.use(bodyDeadline({ timeoutMs: 200, maxBytes: 1000, budget }));
  a.get("/", (c) => c.json({ ok: true }));
  a.post("/", bodyLimit(80), async (c) => c.json({ got: (await c.req.text()).length }));
  const declared = (n: number) =>
    new Request("http://fn/", {
      method: "POST",
      body: stalled("{"),
      headers: { "content-length": String(n) },
    });
  // Two slow bodies declaring 60 and 30 bytes hold 90 of the 100.
  const slow = [a.fetch(declared(60)), a.fetch(declared(30))];
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(budget.usedBytes, 90);
  for (const variant of [declared(20), post(stalled("x".repeat(20)))]) {
    const res = await a.fetch(variant);
    assertEquals(res.status, 503, "declared or streamed, a body past the budget is refused");
    assertEquals((await res.json()).error.code, "BODY_BUDGET_EXHAUSTED");
    assertEquals(res.headers.get("retry-after"), "1");
  }
  assertEquals((await a.fetch(new Request("http://fn/"))).status, 200, "no body, served");
  for (const r of await Promise.all(slow)) assertEquals(r.status, 408);
  assertEquals(budget.usedBytes, 0, "every byte given back once answered");
  assertEquals((await a.fetch(post("x".repeat(50)))).status, 200);
  assertEquals(budget.usedBytes, 0);
});

/** Headers announcing 1,000 bytes, then one byte every `everyMs`: when the server closes (ms), and its answer. */
async function drip(
  port: number,
  headers: Record<string, string>,
  everyMs: number,
): Promise<{ answer: string; closedAfterMs: number | null }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = Object.entries({ host: "127.0.0.1", "content-length": "1000", ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`).join("");
  await conn.write(new TextEncoder().encode(`POST / HTTP/1.1\r\n${head}\r\n{`));
  const started = performance.now();
  let writing = true;
  const dripping = setInterval(() => {
    if (writing) conn.write(new TextEncoder().encode("x")).catch(() => writing = false);
  }, everyMs);
  let closedAfterMs: number | null = performance.now();
  const giveUp = setTimeout(() => {
    closedAfterMs = null;
    conn.close();
  }, 3_000);
  let answer = "";
  const buf = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    answer += new TextDecoder().decode(buf.subarray(0, n));
  }
  writing = false;
  clearInterval(dripping);
  clearTimeout(giveUp);
  if (closedAfterMs !== null) {
    closedAfterMs = performance.now() - started;
    conn.close();
  }
  return { answer, closedAfterMs };
}

Deno.test("a slow client that keeps dripping bytes is disconnected by the server after its 408 (or a refusal of its unread body), not kept until it leaves", async () => {
  const server = guardedServer(); // body deadline 300 ms
  try {
    for (
      const [status, headers, everyMs] of [
        ["408", { authorization: "Bearer ok" }, 100],
        ["408", { authorization: "Bearer ok" }, 250],
        ["401", {}, 100],
        ["401", {}, 250],
      ] as const
    ) {
      const { answer, closedAfterMs } = await drip(server.addr.port, headers, everyMs);
      assert(answer.startsWith(`HTTP/1.1 ${status}`), `${status}: ${answer.slice(0, 40)}`);
      assert(/connection: close/i.test(answer));
      // Before: the connection stayed up for as long as the client kept sending (3 s here).
      assert(closedAfterMs !== null, `${status} every ${everyMs} ms: closed by the server`);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("an answer given before the body was read closes the connection from the server side (401, 404, 413; body partly or wholly sent)", async () => {
  const server = guardedServer();
  try {
    const auth = { authorization: "Bearer ok" };
    const cases: [string, Record<string, string>, number, string][] = [
      ["401", {}, 500, "{"], // refused before the body; the rest never comes
      ["401", {}, 500, "x".repeat(500)], // whole body sent, refused unread
      ["413", auth, 5_000, "{"], // declared above the route's limit
      ["404", auth, 500, "{"], // no such route
    ];
    for (const [status, headers, declared, sent] of cases) {
      const path = status === "404" ? "/nowhere" : "/";
      const { answer, closedByServer } = await rawPost(
        server.addr.port,
        path,
        headers,
        declared,
        sent,
        2_000,
      );
      assert(answer.startsWith(`HTTP/1.1 ${status}`), `${status}: ${answer.slice(0, 40)}`);
      assert(
        closedByServer,
        `${status} (${sent.length} of ${declared} bytes): closed by the server`,
      );
    }
    const ok = await rawPost(server.addr.port, "/", auth, 2, "{}", 300);
    assert(ok.answer.startsWith("HTTP/1.1 200"), ok.answer);
    assert(!ok.closedByServer, "a request whose body was read keeps its connection");
  } finally {
    await server.shutdown();
  }
});

Deno.test("a request with an empty body (Content-Length: 0) that no route reads keeps its connection", async () => {
  const a = new Hono();
  a.use(bodyDeadline({ timeoutMs: 100, maxBytes: 64 }));
  a.post("/drain", (c) => c.json({ drained: 0 }));
  const empty = await a.fetch(
    new Request("http://fn/drain", {
      method: "POST",
      body: "",
      headers: { "content-length": "0" },
    }),
  );
  assertEquals(empty.status, 200);
  assertEquals(empty.headers.get("connection"), null);
  const unread = await a.fetch(new Request("http://fn/drain", { method: "POST", body: "{}" }));
  assertEquals(unread.headers.get("connection"), "close", "a body nobody read closes it");
});
