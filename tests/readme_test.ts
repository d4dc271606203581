/** The README stays the one list of every tunable limit. */
import { assert } from "@std/assert";
import { LimitsSchema } from "../shared/limits.ts";

Deno.test("the README names every tunable limit of shared/limits.ts", async () => {
  // The README, or the docs/ pages it leads to (each feature's page has its own Limits table).
  let readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  for await (const entry of Deno.readDir(new URL("../docs/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      readme += await Deno.readTextFile(new URL(`../docs/${entry.name}`, import.meta.url));
    }
  }
  const missing = Object.keys(LimitsSchema.shape).filter((name) => !readme.includes(`\`${name}\``));
  assert(missing.length === 0, `README lacks: ${missing.join(", ")}`);
});

Deno.test("the README starts with the two commands a newcomer needs", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const head = readme.slice(0, 800);
  assert(head.includes("npm install && npm start") && head.includes("npm test"));
});
