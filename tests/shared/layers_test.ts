/**
 * shared/ is grouped by concern, and no import runs upward between the groups: the top-level
 * leaves (errors, zod, logger, limits, …) import no group; resilience/ imports only the leaves;
 * db/ the leaves and resilience/; http/ and auth/ those; alerts/ and upstreams/ those; platform/
 * (which composes everything) anything. A module whose name starts with `_` is its folder's own:
 * nothing outside that folder imports it (tests aside).
 */
import { assertEquals } from "@std/assert";

const ROOT = new URL("../../", import.meta.url);
const LAYER: Record<string, number> = {
  "": 0,
  resilience: 1,
  db: 2,
  http: 3,
  auth: 3,
  alerts: 4,
  upstreams: 4,
  platform: 5,
};

async function* files(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}${entry.name}`;
    if (entry.isDirectory) yield* files(`${path}/`);
    else if (path.endsWith(".ts")) yield path;
  }
}

/** The group of a path under shared/ ("" for a top-level file). */
const groupOf = (path: string) => {
  const parts = path.split("/");
  return parts.length > 2 ? parts[1] : "";
};

/** The relative imports of a module's code (its doc examples excluded). */
function imports(path: string, text: string): string[] {
  const code = text.split("\n").filter((l) => !/^\s*(\*|\/\/)/.test(l)).join("\n");
  return [...code.matchAll(/from "(\.{1,2}\/[^"]+)"/g)].map((m) =>
    new URL(m[1], new URL(path, ROOT)).pathname.slice(ROOT.pathname.length)
  );
}

Deno.test("no import in shared/ runs upward between its groups, and a private module stays in its folder", async () => {
  const wrong: string[] = [];
  for await (const path of files("shared/")) {
    const text = await Deno.readTextFile(new URL(path, ROOT));
    const from = groupOf(path);
    if (!(from in LAYER)) wrong.push(`${path}: a folder the layers do not name`);
    for (const target of imports(path, text)) {
      if (!target.startsWith("shared/")) {
        wrong.push(`${path} -> ${target} (outside shared/)`);
        continue;
      }
      const to = groupOf(target);
      const upward = LAYER[to] > LAYER[from] || (LAYER[to] === LAYER[from] && to !== from);
      if (upward) wrong.push(`${path} (${from || "top"}) -> ${target} (${to || "top"})`);
      if (target.split("/").at(-1)!.startsWith("_") && to !== from) {
        wrong.push(`${path} -> ${target} (private to shared/${to})`);
      }
    }
  }
  for await (const path of files("functions/")) {
    const text = await Deno.readTextFile(new URL(path, ROOT));
    for (const target of imports(path, text)) {
      if (target.startsWith("shared/") && target.split("/").at(-1)!.startsWith("_")) {
        wrong.push(`${path} -> ${target} (private to its folder)`);
      }
    }
  }
  assertEquals(wrong, []);
});

Deno.test("shared/ keeps at most ten files at its top", async () => {
  const top: string[] = [];
  for await (const entry of Deno.readDir(new URL("shared/", ROOT))) {
    if (entry.isFile) top.push(entry.name);
  }
  assertEquals(top.length <= 10, true, `shared/ has ${top.length} files at its top: ${top}`);
});
