/**
 * The Stripe simulator (local/sandbox/stripe.ts) speaks Stripe's protocol: `GET /v1/events` in
 * Stripe's list shape and parameters (read back with the real `stripe` library), Stripe's 400
 * and 401 error shapes, and webhook deliveries the real library verifies.
 */
import Stripe from "stripe";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { startStripeSimulator, type StripeSimulator } from "../../../local/sandbox/stripe.ts";

const KEY = "sk_test_simulator_protocol";
const SECRET = "whsec_simulator_protocol_secret";

async function withSim(fn: (sim: StripeSimulator) => Promise<void>, webhookUrl?: string) {
  const sim = await startStripeSimulator({ secretKey: KEY, webhookSecret: SECRET, webhookUrl });
  try {
    await fn(sim);
  } finally {
    await sim.close();
  }
}

const get = async (sim: StripeSimulator, query: string, key: string | null = KEY) => {
  const res = await fetch(`${sim.url}/v1/events?${query}`, {
    headers: key === null ? {} : { authorization: `Bearer ${key}` },
  });
  return { status: res.status, body: await res.json() };
};

const library = (sim: StripeSimulator) => {
  const u = new URL(sim.url);
  return new Stripe(KEY, {
    httpClient: Stripe.createFetchHttpClient(),
    host: u.hostname,
    port: u.port,
    protocol: "http",
    maxNetworkRetries: 0,
    telemetry: false,
  });
};

/** 25 events: five types in turn, two per second. */
async function seed(sim: StripeSimulator, base = 1_700_000_000) {
  const types = ["invoice.paid", "charge.refunded", "customer.created", "invoice.paid", "x.y"];
  const ids: string[] = [];
  for (let i = 0; i < 25; i++) {
    const { event } = await sim.emit({ type: types[i % 5], object: { id: `obj_${i}` } }, {
      created: base + Math.floor(i / 2),
    });
    ids.push(event.id);
  }
  return ids;
}

Deno.test("stripe simulator: GET /v1/events answers Stripe's list shape, newest first, with has_more and limit", async () => {
  await withSim(async (sim) => {
    const ids = await seed(sim);
    const { status, body } = await get(sim, "limit=3");
    assertEquals(status, 200);
    assertEquals(body.object, "list");
    assertEquals(body.url, "/v1/events");
    assertEquals(body.has_more, true);
    assertEquals(body.data.map((e: { id: string }) => e.id), ids.slice(-3).reverse());
    assertEquals(body.data[0].object, "event");
    const all = await get(sim, "limit=100");
    assertEquals(all.body.data.length, 25);
    assertEquals(all.body.has_more, false);
    assertEquals((await get(sim, "")).body.data.length, 10, "limit defaults to 10");
  });
});

Deno.test("stripe simulator: created[gt|gte|lt|lte], type and types[] filter; starting_after and ending_before page", async () => {
  await withSim(async (sim) => {
    const ids = await seed(sim, 1000);
    const created = (q: string) =>
      get(sim, `limit=100&${q}`).then((r) =>
        r.body.data.map((e: { created: number }) => e.created)
      );
    assertEquals(await created("created[gte]=1011"), [1012, 1011, 1011]);
    assertEquals(await created("created[gt]=1011"), [1012]);
    assertEquals(await created("created[lt]=1001"), [1000, 1000]);
    assertEquals(await created("created[lte]=1001&created[gte]=1001"), [1001, 1001]);
    assertEquals(await created("created=1005"), [1005, 1005]);
    const types = await get(sim, "limit=100&types[]=charge.refunded&types[]=x.y");
    assertEquals(types.body.data.length, 10);
    assert(
      types.body.data.every((e: { type: string }) => /^(charge\.refunded|x\.y)$/.test(e.type)),
    );
    const indexed = await get(sim, "limit=100&types[0]=x.y");
    assertEquals(indexed.body.data.length, 5);
    const one = await get(sim, "limit=100&type=invoice.paid");
    assertEquals(one.body.data.length, 10);

    const after = await get(sim, `limit=2&starting_after=${ids[10]}`);
    assertEquals(after.body.data.map((e: { id: string }) => e.id), [ids[9], ids[8]]);
    assertEquals(after.body.has_more, true);
    const before = await get(sim, `limit=2&ending_before=${ids[10]}`);
    assertEquals(before.body.data.map((e: { id: string }) => e.id), [ids[12], ids[11]]);
    assertEquals(before.body.has_more, true);
    const last = await get(sim, `limit=5&starting_after=${ids[2]}`);
    assertEquals(last.body.data.map((e: { id: string }) => e.id), [ids[1], ids[0]]);
    assertEquals(last.body.has_more, false);
  });
});

Deno.test("stripe simulator: the stripe library's auto-pagination reads every matching event once, both ways", async () => {
  await withSim(async (sim) => {
    const ids = await seed(sim, 2000);
    const stripe = library(sim);
    const forward: string[] = [];
    const params = { types: ["invoice.paid", "charge.refunded"], created: { gte: 2002 }, limit: 3 };
    for await (const e of stripe.events.list(params)) forward.push(e.id);
    const expected = ids.filter((_, i) => i >= 4 && [0, 1, 3].includes(i % 5)).reverse();
    assertEquals(forward, expected);
    assertEquals(
      sim.listCalls,
      Math.ceil(expected.length / 3),
      "has_more is false on the last page",
    );

    const backward: string[] = [];
    for await (const e of stripe.events.list({ ...params, ending_before: ids[3] })) {
      backward.push(e.id);
    }
    assertEquals(backward, expected.slice().reverse(), "ending_before pages toward newer events");
  });
});

Deno.test("stripe simulator: Stripe's 401 without or with a wrong key, 400 for bad parameters", async () => {
  await withSim(async (sim) => {
    const none = await get(sim, "limit=1", null);
    assertEquals(none.status, 401);
    assertEquals(none.body.error.type, "invalid_request_error");
    const wrong = await get(sim, "limit=1", "sk_test_wrong");
    assertEquals(wrong.status, 401);
    assertMatch(wrong.body.error.message, /Invalid API Key/);
    assert(!JSON.stringify(wrong.body).includes("sk_test_wrong"), "the key is not echoed");

    for (
      const [query, param] of [
        ["limit=0", "limit"],
        ["limit=101", "limit"],
        ["limit=ten", "limit"],
        ["created[gte]=soon", "created[gte]"],
        ["created[after]=1", "created[after]"],
        ["colour=red", "colour"],
        ["type=a&types[]=b", "types"],
        ["starting_after=evt_missing", "starting_after"],
      ]
    ) {
      const { status, body } = await get(sim, query);
      assertEquals(status, 400, query);
      assertEquals(body.error.type, "invalid_request_error", query);
      assertEquals(body.error.param, param, query);
    }
    const both = await get(sim, "starting_after=a&ending_before=b");
    assertEquals(both.status, 400);
    const stripe = library(sim);
    const err = await stripe.events.list({ limit: 1000 }).catch((e) => e);
    assertEquals(err.type, "StripeInvalidRequestError", "the library reads Stripe's 400");
  });
});

Deno.test("stripe simulator: deliveries are signed as Stripe signs them (the library verifies them) and can be dropped", async () => {
  const received: { body: string; signature: string }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    received.push({ body: await req.text(), signature: req.headers.get("stripe-signature") ?? "" });
    return Response.json({ received: true });
  });
  try {
    await withSim(async (sim) => {
      const sent = await sim.emit({ type: "invoice.paid", object: { id: "in_1" } });
      assertEquals(sent.delivery, { delivered: true, status: 200 });
      const verified = await Stripe.webhooks.constructEventAsync(
        received[0].body,
        received[0].signature,
        SECRET,
        undefined,
        Stripe.createSubtleCryptoProvider(),
      );
      assertEquals(verified.id, sent.event.id);
      sim.dropNext(1);
      const dropped = await sim.emit({ type: "invoice.paid", object: { id: "in_2" } });
      assertEquals(dropped.delivery, { delivered: false, reason: "dropped" });
      const explicit = await sim.emit({ type: "invoice.paid", object: { id: "in_3" } }, {
        deliver: false,
      });
      assertEquals(explicit.delivery.delivered, false);
      assertEquals(received.length, 1, "dropped deliveries never arrive");
      const listed = await get(sim, "limit=10");
      assertEquals(listed.body.data.length, 3, "dropped events are still listed");
    }, `http://127.0.0.1:${server.addr.port}/`);
  } finally {
    await server.shutdown();
  }
});
