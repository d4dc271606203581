import { Hono } from "hono";
import { assert, assertEquals } from "@std/assert";
import { cors, corsPolicy } from "../../../shared/http/cors.ts";
import { errorParts, HttpError } from "../../../shared/errors.ts";

const ALLOWED = "https://app.example.com";

function app() {
  let effects = 0;
  const a = new Hono();
  a.onError((err, c) => {
    const { status, headers, body } = errorParts(err, "test");
    return c.body(body, status as 400, headers);
  });
  a.use(cors({ origins: [ALLOWED, "http://localhost:5173"], maxAgeSeconds: 600 }));
  a.post("/", (c) => {
    effects++;
    return c.json({ ok: true });
  });
  a.get("/fail", () => {
    throw new HttpError(401, "UNAUTHORIZED", "no");
  });
  return { fetch: (req: Request) => a.fetch(req), effects: () => effects };
}

const preflight = (origin: string) =>
  new Request("http://fn/", {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, idempotency-key",
    },
  });

Deno.test("cors() answers a preflight from an allowed origin with that exact origin, never *", async () => {
  const res = await app().fetch(preflight(ALLOWED));
  assertEquals(res.status, 204);
  assertEquals(res.headers.get("access-control-allow-origin"), ALLOWED);
  assertEquals(res.headers.get("vary"), "Origin");
  // Bearer tokens, not cookies: no credentials grant (issue 12, point 11).
  assertEquals(res.headers.get("access-control-allow-credentials"), null);
  assertEquals(res.headers.get("access-control-max-age"), "600");
  const allowHeaders = res.headers.get("access-control-allow-headers")!.split(", ");
  for (
    const h of [
      "authorization",
      "apikey",
      "content-type",
      "x-client-info",
      "idempotency-key",
      "x-request-id",
    ]
  ) {
    assert(allowHeaders.includes(h), `allows ${h}`);
  }
  assert(res.headers.get("access-control-allow-methods")!.includes("POST"));
});

Deno.test("corsPolicy().preflight() answers exactly as the guard does, with a new Response each time", async () => {
  const policy = corsPolicy({ origins: [ALLOWED], maxAgeSeconds: 600 });
  const inStack = new Hono();
  inStack.use(policy.guard);
  const byGuard = await inStack.fetch(preflight(ALLOWED));
  const first = policy.preflight(preflight(ALLOWED))!;
  assertEquals(first.status, 204);
  assertEquals([...first.headers], [...byGuard.headers]);
  // Each answer is its own: what is added to one (preflightsFirst adds the request id) is not in the next.
  first.headers.append("x-request-id", "one");
  const second = policy.preflight(preflight(ALLOWED))!;
  assertEquals(second.headers.get("x-request-id"), null);
  assertEquals([...second.headers], [...byGuard.headers]);
  // Anything that is not a preflight from an allowed origin is left to the guard.
  assertEquals(policy.preflight(preflight("https://evil.test")), undefined);
  assertEquals(policy.preflight(new Request("http://fn/", { method: "OPTIONS" })), undefined);
  assertEquals(
    policy.preflight(
      new Request("http://fn/", { method: "OPTIONS", headers: { origin: ALLOWED } }),
    ),
    undefined,
  );
  assertEquals(
    policy.preflight(
      new Request("http://fn/", {
        method: "POST",
        headers: { origin: ALLOWED, "access-control-request-method": "POST" },
      }),
    ),
    undefined,
  );
});

for (
  const origin of [
    "https://evil.test",
    "https://app.example.com.evil.test",
    "https://evil-app.example.com",
    "http://app.example.com",
    "https://app.example.com:444",
    "https://APP.example.com.",
    "null",
    "*",
  ]
) {
  Deno.test(`cors() answers 403 to a preflight from ${origin} with no Access-Control-Allow-* header`, async () => {
    const res = await app().fetch(preflight(origin));
    assertEquals(res.status, 403);
    for (const [name] of res.headers) {
      assert(!name.startsWith("access-control-allow"), `unexpected ${name}`);
    }
    assertEquals((await res.json()).error.code, "ORIGIN_NOT_ALLOWED");
  });
}

Deno.test("cors() refuses a request from another origin with 403 and no effect", async () => {
  const a = app();
  const res = await a.fetch(
    new Request("http://fn/", {
      method: "POST",
      headers: { origin: "https://app.example.com.evil.test" },
    }),
  );
  assertEquals(res.status, 403);
  assertEquals(a.effects(), 0);
  assertEquals(res.headers.get("access-control-allow-origin"), null);
});

Deno.test("cors() lets an allowed origin through and exposes the contract's headers", async () => {
  const a = app();
  const res = await a.fetch(
    new Request("http://fn/", { method: "POST", headers: { origin: ALLOWED } }),
  );
  assertEquals(res.status, 200);
  assertEquals(a.effects(), 1);
  assertEquals(res.headers.get("access-control-allow-origin"), ALLOWED);
  const exposed = res.headers.get("access-control-expose-headers")!.split(", ");
  for (
    const h of [
      "x-request-id",
      "retry-after",
      "idempotent-replayed",
      "ratelimit",
      "ratelimit-policy",
    ]
  ) {
    assert(exposed.includes(h), `exposes ${h}`);
  }
});

Deno.test("cors() keeps its headers on an error answer to an allowed origin", async () => {
  const res = await app().fetch(new Request("http://fn/fail", { headers: { origin: ALLOWED } }));
  assertEquals(res.status, 401);
  assertEquals(res.headers.get("access-control-allow-origin"), ALLOWED);
});

Deno.test("cors() passes requests without an Origin (server to server) without CORS headers", async () => {
  const a = app();
  const res = await a.fetch(new Request("http://fn/", { method: "POST" }));
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("access-control-allow-origin"), null);
});

Deno.test("cors() refuses a wildcard or a path as an allowed origin at start-up", () => {
  for (const bad of ["*", "https://app.example.com/path", "not a url"]) {
    let threw = false;
    try {
      cors({ origins: [bad], maxAgeSeconds: 1 });
    } catch {
      threw = true;
    }
    assert(threw, `should refuse ${bad}`);
  }
});
