/**
 * Runs one function on its own with `Deno.serve`, as Supabase's Edge Runtime runs
 * `functions/<name>/index.ts` (or its bundle): the platform from the process environment, then
 * the handler. It listens and serves at once: what needs no database (a preflight, a `401`) is
 * answered without it, and a call to the database waits for its first probe (bounded by its
 * connect and query deadlines), so a cold start answers from a decided gate, never a guess.
 *
 * @example
 * ```ts
 * import { defineFunction } from "./app.ts";
 * import { BaseEnv } from "../base_env.ts";
 * import { serveStandalone } from "./standalone.ts";
 *
 * const myFunction = defineFunction({
 *   name: "hello",
 *   env: BaseEnv,
 *   browser: false,
 *   build(app) {
 *     app.get("/", (c) => c.json({ hello: "world" }));
 *   },
 * });
 * if (import.meta.main) await serveStandalone(myFunction);
 * ```
 */
import type * as z from "../zod.ts";
import type { AppEnv, FunctionDefinition } from "./app.ts";
import { bootFunction, type FetchHandler } from "./boot.ts";
import { operatorAlerts } from "../alerts/operator_alerts.ts";
import { createLogger } from "../logger.ts";
import { createPlatform } from "./platform.ts";

export async function serveStandalone<S extends z.ZodType, E extends AppEnv>(
  def: FunctionDefinition<S, E>,
): Promise<void> {
  const log = createLogger();
  let booted:
    | { platform: Awaited<ReturnType<typeof createPlatform>>; fn: { fetch: FetchHandler } }
    | undefined;
  const booting = createPlatform(Deno.env.toObject(), {
    log,
    waitForDatabase: false,
    alertSink: operatorAlerts,
  }).then(async (
    platform,
  ) => booted = { platform, fn: await bootFunction(def, platform) });
  const port = Number(Deno.env.get("PORT") ?? 8000);
  const hostname = Deno.env.get("HOST") ?? "0.0.0.0";
  const server = Deno.serve(
    {
      port,
      hostname,
      onListen: (addr) =>
        log.info("listening", { url: `http://${addr.hostname}:${addr.port}/${def.name}` }),
    },
    // Once booted, a synchronous answer (an answered preflight) reaches Deno.serve as it is.
    (req, info) =>
      booted ? booted.fn.fetch(req, info) : booting.then(({ fn }) => fn.fetch(req, info)),
  );
  const { platform } = await booting;
  const stop = async () => {
    await server.shutdown();
    await platform.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
}
