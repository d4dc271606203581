/**
 * The catch-up across instances: webhooks and catch-ups racing over two server processes on one
 * Postgres apply each event exactly once. Needs the Postgres server (`onServer`).
 */
import { assert, assertEquals } from "@std/assert";
import { type SimulatedEvent, startStripeSimulator } from "../../../local/sandbox/stripe.ts";
import { freshDatabase, onServer } from "../../support/db.ts";
import { serviceToken, testEnv } from "../../support/env.ts";
import { spawnServer } from "../../support/server.ts";
import { catchUp, storedState } from "./catch_up_support.ts";
import { checkoutCompleted, delivery, SECRET, STRIPE_KEY, webhookEnv } from "./stripe_events.ts";

Deno.test({
  name:
    "catch-up: webhooks and two catch-ups racing over two server processes apply each of 60 events once",
  ...onServer,
  async fn() {
    const db = await freshDatabase({ migrated: true });
    const sim = await startStripeSimulator({ secretKey: STRIPE_KEY, webhookSecret: SECRET });
    try {
      const env = testEnv(db.url, {
        ...webhookEnv(),
        STRIPE_API_URL: sim.url,
        // Small runs, so the catch-ups page while the webhooks arrive.
        STRIPE_CATCHUP_MAX_EVENTS: "20",
      });
      const a = await spawnServer(env);
      const b = await spawnServer(env);
      try {
        const base = Math.floor(Date.now() / 1000) - 120;
        const events: SimulatedEvent[] = [];
        for (let i = 0; i < 60; i++) {
          const e = checkoutCompleted({ created: base + Math.floor(i / 2) });
          events.push((await sim.emit(e as SimulatedEvent, { deliver: false })).event);
        }
        const token = await serviceToken();
        const servers = [a, b];
        // Every event delivered once to each instance, eight deliveries at a time (as Stripe
        // spreads them), while each instance runs catch-ups.
        const jobs = events.flatMap((e, i) =>
          [0, 1].map((k) => ({ e, server: servers[(i + k) % 2] }))
        );
        const answers: { status: number; body: { duplicate?: boolean } }[] = [];
        const webhooks = Array.from({ length: 8 }, async () => {
          for (let job = jobs.shift(); job; job = jobs.shift()) {
            const res = await job.server.call("payment-webhook", await delivery(job.e));
            answers.push({ status: res.status, body: await res.json() });
          }
        });
        const catchUps = [a, b].map(async (s, i) => {
          const runs = [];
          if (i === 1) await new Promise((r) => setTimeout(r, 20));
          for (let i = 0; i < 6; i++) runs.push(await catchUp(s, token));
          return runs;
        });
        const [, runs] = await Promise.all([
          Promise.all(webhooks),
          Promise.all(catchUps).then((r) => r.flat()),
        ]);
        assertEquals(answers.length, 120);
        assertEquals(answers.filter((r) => r.status !== 200), [], "every delivery answered 200");
        assert(runs.every((r) => r.status === 200), JSON.stringify(runs.map((r) => r.body)));

        const state = await storedState(db.url);
        assertEquals(state.events.length, 60, "each event recorded once");
        assertEquals(state.purchases, 60, "each event applied once");
        const byWebhook = answers.filter((r) => !r.body.duplicate).length;
        const byCatchUp = runs.reduce((n, r) => n + r.body.applied, 0);
        assertEquals(byWebhook + byCatchUp, 60, `webhooks ${byWebhook} + catch-ups ${byCatchUp}`);
        assert(byWebhook > 0 && byCatchUp > 0, `both raced: ${byWebhook} + ${byCatchUp}`);
        assertEquals(
          state.events.filter((e) => e.via === "catch-up").length,
          byCatchUp,
          "the catch-up's rows are exactly what it applied",
        );
      } finally {
        await Promise.all([a.stop(), b.stop()]);
      }
    } finally {
      await sim.close();
      await db.close();
    }
  },
});
