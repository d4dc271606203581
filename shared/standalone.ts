/**
 * Runs one function on its own with `Deno.serve`, as Supabase's Edge Runtime runs
 * `functions/<name>/index.ts`: the platform from the process environment, then the handler.
 *
 * @example
 * if (import.meta.main) await serveStandalone(myFunction);
 */
import { bootFunction, type FunctionDefinition } from "./app.ts";
import { createPlatform } from "./platform.ts";

export async function serveStandalone(def: FunctionDefinition): Promise<void> {
  const platform = await createPlatform(Deno.env.toObject());
  const { fetch } = await bootFunction(def, platform);
  const port = Number(Deno.env.get("PORT") ?? 8000);
  const hostname = Deno.env.get("HOST") ?? "0.0.0.0";
  const server = Deno.serve({
    port,
    hostname,
    onListen: (addr) =>
      platform.log.info("listening", { url: `http://${addr.hostname}:${addr.port}/${def.name}` }),
  }, fetch);
  const stop = async () => {
    await server.shutdown();
    await platform.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
}
