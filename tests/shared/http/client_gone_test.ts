/** whileClientWaits(): the signal means "the client left before its answer", nothing else. */
import { assert, assertEquals } from "@std/assert";
import { whileClientWaits } from "../../../shared/http/client_gone.ts";

Deno.test("whileClientWaits() aborts the work's signal when the client leaves while it runs", async () => {
  const client = new AbortController();
  const req = new Request("http://localhost/", { signal: client.signal });
  const seen = await whileClientWaits(req, async (signal) => {
    client.abort(new Error("client went away"));
    await Promise.resolve();
    return signal.aborted;
  });
  assert(seen, "the work saw the client leave");
});

Deno.test("whileClientWaits() lets go when the work is done: a later abort (Deno's legacy one after a successful answer) reaches nothing", async () => {
  const client = new AbortController();
  const req = new Request("http://localhost/", { signal: client.signal });
  let kept: AbortSignal | undefined;
  const answer = await whileClientWaits(req, (signal) => {
    kept = signal;
    return Promise.resolve("done");
  });
  client.abort(); // what Deno.serve does to request.signal after a successful response
  assertEquals(answer, "done");
  assertEquals(kept!.aborted, false, "a delivered answer is not a vanished client");
});
