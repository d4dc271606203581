/**
 * A client's view: supabase-js, run under Deno, against the sandbox's one URL, exactly as a
 * frontend developer would use it with the keys `npm start` prints.
 */
import { createClient } from "@supabase/supabase-js";
import { assert, assertEquals } from "@std/assert";
import { SANDBOX_USER } from "../../local/sandbox/index.ts";
import { spawnServer } from "../support/server.ts";

Deno.test("supabase-js signs in, places an order, reads a quote and lists orders through functions.invoke", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "sandbox-client-" });
  const server = await spawnServer({}, { cwd });
  try {
    const line = server.output.find((l) => l.startsWith("export SUPABASE_URL="))!;
    const vars = Object.fromEntries(
      line.replace(/^export /, "").split(" ").map((kv) => kv.split("=", 2) as [string, string]),
    );
    assertEquals(vars.SUPABASE_URL, server.url);
    const supabase = createClient(vars.SUPABASE_URL, vars.SUPABASE_ANON_KEY, {
      auth: { persistSession: false, autoRefreshToken: false },
    });

    const { data: auth, error: authError } = await supabase.auth.signInWithPassword({
      email: SANDBOX_USER.email,
      password: SANDBOX_USER.password,
    });
    assertEquals(authError, null);
    assertEquals(auth.user?.id, SANDBOX_USER.id);

    const placed = await supabase.functions.invoke("broker-order", {
      body: { symbol: "AAPL", side: "buy", type: "market", qty: 1, time_in_force: "day" },
      headers: { "Idempotency-Key": `client-${crypto.randomUUID()}` },
    });
    assertEquals(placed.error, null);
    assertEquals(placed.data.symbol, "AAPL");
    assert(placed.data.brokerOrderId, "the broker's order id");

    const quote = await supabase.functions.invoke("market-data?symbols=AAPL", { method: "GET" });
    assertEquals(quote.error, null);
    assert(quote.data.quotes.AAPL.ask > 0);

    const listed = await supabase.functions.invoke("broker-order", { method: "GET" });
    assertEquals(listed.error, null);
    assertEquals(listed.data.orders.map((o: { id: string }) => o.id), [placed.data.id]);

    await supabase.auth.signOut();
  } finally {
    assertEquals(await server.stop("SIGINT"), 0);
    await Deno.remove(cwd, { recursive: true });
  }
});
