/**
 * The benchmark's baseline: a bare `Deno.serve` answering `200 {"status":"ok"}` to everything,
 * spawned as its own process exactly like the server under test, so every scenario's throughput
 * can be read as a fraction of what this machine, runtime and generator manage with no
 * framework, middleware or database at all.
 *
 * Run: `deno run -A local/bench/baseline_server.ts` (`PORT`, default 0 = a free port). It prints
 * `Serving http://127.0.0.1:<port>/` once it listens and stops cleanly on SIGTERM or SIGINT.
 */

const BODY = JSON.stringify({ status: "ok" });
const HEADERS = { "content-type": "application/json" };

if (import.meta.main) {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: Number(Deno.env.get("PORT") ?? 0),
    onListen: ({ port }) => console.log(`Serving http://127.0.0.1:${port}/`),
  }, () => new Response(BODY, { status: 200, headers: HEADERS }));
  const stop = async () => {
    await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
}
