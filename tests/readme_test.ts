/**
 * The documentation's shape: README.md is a user's entry (the two commands first, at most 300
 * lines), docs/limits.md is the one list of every tunable limit, and nothing in README.md or
 * docs/ points at a file outside the repository (a reader of a clone has nothing else).
 */
import { assert } from "@std/assert";
import { LimitsSchema } from "../shared/limits.ts";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, root));

/** README.md and every text file under docs/, as paths from the repository root. */
async function documentation(): Promise<string[]> {
  const files = ["README.md"];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(new URL(dir, root))) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory) await walk(`${path}/`);
      else if (/\.(md|json|txt|ya?ml)$/.test(entry.name)) files.push(path);
    }
  };
  await walk("docs/");
  return files;
}

/**
 * What in one file points outside the repository: a link whose target resolves above the root, an
 * absolute file path or `file:` URL, or a path that climbs out (`../shared/…` from the root).
 */
function outsideReferences(path: string, text: string): string[] {
  const found: string[] = [];
  const base = new URL(path, root);
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    if (/^(https?:|mailto:|#)/.test(target)) continue;
    const resolved = new URL(target, base).href;
    if (!resolved.startsWith(root.href)) found.push(`link ${target}`);
  }
  for (const [span] of text.matchAll(/`[^`\n]+`/g)) {
    // Paths in code spans are written from the repository root, so climbing out of it with
    // `../<folder>/` leaves the repository.
    if (/(^|[\s`'"(=])\.\.\/[\w.-]+\//.test(span)) found.push(`path ${span}`);
  }
  for (const [hit] of text.matchAll(/(?:file:\/\/|~\/|\/(?:work|home|Users|root)\/)[\w./-]*/g)) {
    found.push(`path ${hit}`);
  }
  if (text.includes("../shared/")) found.push("../shared/");
  return found;
}

Deno.test("docs/limits.md names every tunable limit of shared/limits.ts", async () => {
  const limits = await read("docs/limits.md");
  const missing = Object.keys(LimitsSchema.shape).filter((name) => !limits.includes(`\`${name}\``));
  assert(missing.length === 0, `docs/limits.md lacks: ${missing.join(", ")}`);
});

Deno.test("the README starts with the two commands a newcomer needs", async () => {
  const readme = await read("README.md");
  const head = readme.slice(0, 800);
  assert(head.includes("npm install && npm start") && head.includes("npm test"));
});

Deno.test("the README is a user's entry of at most 300 lines", async () => {
  const lines = (await read("README.md")).trimEnd().split("\n").length;
  assert(lines <= 300, `README.md has ${lines} lines; move detail into docs/`);
});

Deno.test("nothing in README.md or docs/ points outside the repository", async () => {
  const files = await documentation();
  assert(files.length > 1, "docs/ holds no documentation");
  const problems: string[] = [];
  for (const path of files) {
    for (const hit of outsideReferences(path, await read(path))) problems.push(`${path}: ${hit}`);
  }
  assert(problems.length === 0, `outside the repository:\n${problems.join("\n")}`);
});

Deno.test("the outside-reference check catches what it is for", () => {
  // Each of these must be found (a check that finds nothing proves nothing).
  const bad = [
    "see `../shared/CONTRACT.md`",
    "[the contract](../../shared/CONTRACT.md)",
    "[notes](/work/shared/NOTES.md)",
    "as `../shared/NOTES.md` says",
  ];
  for (const text of bad) {
    assert(outsideReferences("docs/api.md", text).length > 0, `not caught: ${text}`);
  }
  // And these stay allowed: links within the repository, web links, a name that is not a path.
  const good = [
    "[README](../README.md)",
    "[limits](limits.md#x)",
    "[Stripe](https://stripe.com/docs/webhooks)",
    "`__proto__` or `../x` is an unknown tool",
    "writes only under `/tmp`",
  ];
  for (const text of good) {
    const hits = outsideReferences("docs/api.md", text);
    assert(hits.length === 0, `wrongly caught: ${text} (${hits.join(", ")})`);
  }
});

Deno.test("every relative link in README.md and docs/ names a file of the repository", async () => {
  const broken: string[] = [];
  for (const path of await documentation()) {
    if (!path.endsWith(".md")) continue;
    const text = await read(path);
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      if (/^(https?:|mailto:|#)/.test(target)) continue;
      const file = new URL(target.split("#")[0], new URL(path, root));
      try {
        await Deno.stat(file);
      } catch {
        broken.push(`${path}: ${target}`);
      }
    }
  }
  assert(broken.length === 0, `broken links:\n${broken.join("\n")}`);
});
