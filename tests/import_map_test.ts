/**
 * What ships is what runs: the functions' import map (functions/import_map.json, the one
 * `supabase functions deploy` uploads with each function) names production dependencies only,
 * every function of config.toml uses it, and each of its entries is in the root deno.json at the
 * identical version, so local runs and tests load exactly what is deployed and the two never
 * drift.
 */
import { assert, assertEquals } from "@std/assert";

const ROOT = new URL("../", import.meta.url);
const read = async (path: string) => await Deno.readTextFile(new URL(path, ROOT));

const functionsMap: Record<string, string> = JSON.parse(await read("functions/import_map.json"))
  .imports;
const rootMap: Record<string, string> = JSON.parse(await read("deno.json")).imports;

Deno.test("the functions' import map is a subset of deno.json's, with identical versions", () => {
  for (const [name, target] of Object.entries(functionsMap)) {
    assertEquals(rootMap[name], target, `${name} differs from deno.json's`);
  }
});

Deno.test("the functions' import map names only npm packages, none of the tests' or local tools'", () => {
  const devOnly = [
    "@std/assert",
    "@electric-sql/pglite",
    "@electric-sql/pglite-socket",
    "fast-check",
    "playwright-core",
    "hdr-histogram-js",
    "dotenv",
    "ajv",
  ];
  for (const [name, target] of Object.entries(functionsMap)) {
    assert(target.startsWith("npm:"), `${name} → ${target} is not an npm package`);
    assert(!devOnly.includes(name), `${name} is a test or local dependency`);
  }
});

Deno.test("every function of config.toml deploys with the functions' import map", async () => {
  const toml = await read("supabase/config.toml");
  const sections = [...toml.matchAll(/^\[functions\.([\w-]+)\]\s*\n((?:(?!\[)[^\n]*\n?)*)/gm)];
  assert(sections.length >= 7, "config.toml lists the functions");
  for (const [, name, body] of sections) {
    assertEquals(
      /^import_map\s*=\s*"([^"]+)"/m.exec(body)?.[1],
      "../functions/import_map.json",
      `functions.${name}`,
    );
  }
});

Deno.test("every package the functions import is in their import map", async () => {
  const missing = new Set<string>();
  for (const dir of ["functions", "shared"]) {
    for await (const file of walk(new URL(`${dir}/`, ROOT))) {
      const text = await Deno.readTextFile(file);
      for (const m of text.matchAll(/(?:from|import\()\s*"([^".][^"]*)"/g)) {
        const spec = m[1];
        if (spec.startsWith("node:") || spec.startsWith("npm:") || /\s/.test(spec)) continue;
        const known = spec in functionsMap ||
          Object.keys(functionsMap).some((k) => k.endsWith("/") && spec.startsWith(k));
        if (!known) missing.add(`${spec} (${file.pathname.slice(ROOT.pathname.length)})`);
      }
    }
  }
  assertEquals([...missing], []);
});

async function* walk(dir: URL): AsyncGenerator<URL> {
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory) yield* walk(new URL(`${entry.name}/`, dir));
    else if (entry.name.endsWith(".ts")) yield new URL(entry.name, dir);
  }
}
