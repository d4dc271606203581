/** The README and docs/ name every tunable limit (docs/ holds what moved out of the README). */
import { assert } from "@std/assert";
import { LimitsSchema } from "../shared/limits.ts";

Deno.test("the README or docs/ name every tunable limit of shared/limits.ts", async () => {
  const texts = [await Deno.readTextFile(new URL("../README.md", import.meta.url))];
  for await (const entry of Deno.readDir(new URL("../docs/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      texts.push(await Deno.readTextFile(new URL(`../docs/${entry.name}`, import.meta.url)));
    }
  }
  const all = texts.join("\n");
  const missing = Object.keys(LimitsSchema.shape).filter((name) => !all.includes(`\`${name}\``));
  assert(missing.length === 0, `README and docs/ lack: ${missing.join(", ")}`);
});

Deno.test("the README starts with the two commands a newcomer needs", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const head = readme.slice(0, 800);
  assert(head.includes("npm install && npm start") && head.includes("npm test"));
});
