/**
 * What the edge check does with an upload of `supabase functions deploy`: judge its paths (no
 * test or local-only code), lay exactly its files out in an empty folder, and bundle them there
 * as the platform does (`deno bundle --platform deno --code-splitting`), so a file the CLI did not
 * upload fails the bundle. Local only.
 *
 * @example
 * ```ts
 * import { notProduction } from "./upload.ts";
 *
 * notProduction("tests/support/assert.ts"); // "test code (tests/)"
 * notProduction("shared/platform/app.ts"); // undefined
 * ```
 */
import type { Upload } from "./management_api.ts";

function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Why an uploaded path is test or local-only code, if it is. */
export function notProduction(path: string): string | undefined {
  if (/^(\.\/)?tests\//.test(path)) return "test code (tests/)";
  if (/^(\.\/)?local\//.test(path)) return "local-only code (local/)";
  if (/(^|\/)node_modules\//.test(path)) return "a file under node_modules/";
  if (/_test\.[cm]?[jt]sx?$/.test(path)) return "a test file (*_test.ts)";
  return undefined;
}

/** Lays out exactly the uploaded files of `upload` under `dir` (an empty folder). */
export async function layOut(upload: Upload, dir: string): Promise<void> {
  for (const [path, bytes] of upload.files) {
    expect(!path.startsWith("/") && !path.split("/").includes(".."), `odd path ${path}`);
    const file = `${dir}/${path}`;
    await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(file, bytes);
  }
}

/** One line naming the uploaded files, folder by folder. */
export function describeUpload(upload: Upload): string {
  const byDir = new Map<string, string[]>();
  for (const path of [...upload.files.keys()].sort()) {
    const cut = path.lastIndexOf("/");
    const dir = cut === -1 ? "." : path.slice(0, cut);
    byDir.set(dir, [...(byDir.get(dir) ?? []), path.slice(cut + 1)]);
  }
  return [...byDir].map(([dir, files]) => `${dir}/{${files.join(",")}}`).join(" ");
}

/**
 * Bundles `entry` into the folder `out` (its entry file is `index.js`), in the folder `cwd` with
 * the import map `config` when given; returns the total size.
 */
export async function bundle(
  entry: string,
  out: string,
  { cwd, config }: { cwd: string; config?: string },
): Promise<number> {
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      "--code-splitting",
      ...(config ? ["--config", config] : []),
      entry,
      "--outdir",
      out,
    ],
    cwd,
    stdout: "null",
    stderr: "piped",
  }).output();
  expect(success, `deno bundle failed: ${new TextDecoder().decode(stderr).slice(0, 500)}`);
  let size = 0;
  for await (const f of Deno.readDir(out)) size += (await Deno.stat(`${out}/${f.name}`)).size;
  return size;
}
