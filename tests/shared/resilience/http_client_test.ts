import { assert, assertEquals, assertLess, assertRejects } from "@std/assert";
import {
  fetchWithDeadline,
  UpstreamTimeout,
  UpstreamUnreachable,
} from "../../../shared/resilience/http_client.ts";

Deno.test("fetchWithDeadline() aborts the upstream call at the deadline, and the upstream sees it", async () => {
  let upstreamAborted!: () => void;
  const aborted = new Promise<void>((r) => (upstreamAborted = r));
  const server = Deno.serve({ port: 0, onListen() {} }, (req) => {
    req.signal.addEventListener("abort", () => upstreamAborted());
    return new Promise<Response>((r) => setTimeout(() => r(new Response("late")), 3000));
  });
  try {
    const started = performance.now();
    await assertRejects(
      () =>
        fetchWithDeadline(`http://127.0.0.1:${server.addr.port}/`, {}, {
          timeoutMs: 100,
          upstream: "slow api",
        }),
      UpstreamTimeout,
    );
    assertLess(performance.now() - started, 1000);
    await aborted; // the upstream's request was really cancelled, not left running
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetchWithDeadline() reads the body inside the deadline", async () => {
  const server = Deno.serve({ port: 0, onListen() {} }, () => {
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("{"));
        // never closes: a stalled body
      },
    });
    return new Response(body);
  });
  try {
    await assertRejects(
      () =>
        fetchWithDeadline(`http://127.0.0.1:${server.addr.port}/`, {}, {
          timeoutMs: 150,
          upstream: "stalled api",
        }, (r) => r.text()),
      UpstreamTimeout,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetchWithDeadline() reports a refused connection as UpstreamUnreachable", async () => {
  const l = Deno.listen({ port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const err = await assertRejects(
    () =>
      fetchWithDeadline(`http://127.0.0.1:${port}/`, {}, { timeoutMs: 1000, upstream: "gone api" }),
    UpstreamUnreachable,
  );
  assert(err.message.includes("gone api"));
});

Deno.test("fetchWithDeadline() returns the upstream's answer when it is in time", async () => {
  const server = Deno.serve({ port: 0, onListen() {} }, () => Response.json({ ok: 1 }));
  try {
    const body = await fetchWithDeadline(`http://127.0.0.1:${server.addr.port}/`, {}, {
      timeoutMs: 1000,
      upstream: "api",
    }, (r) => r.json());
    assertEquals(body, { ok: 1 });
  } finally {
    await server.shutdown();
  }
});
