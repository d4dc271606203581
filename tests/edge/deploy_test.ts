/**
 * What `supabase functions deploy --use-api` (the real CLI) uploads is what ships: every
 * function of config.toml is uploaded with config.toml's verify_jwt and the functions' own
 * import map, holds no test or local-only code, and bundles alone in an empty folder; and the
 * edge check's judgement fails as it must: an upload missing a file does not bundle, test and
 * local code is named. (The edge check, `npm run check:edge`, then boots each bundle.)
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { deployFunctions } from "../../local/edge/supabase_cli.ts";
import { bundle, layOut, notProduction } from "../../local/edge/upload.ts";
import type { Upload } from "../../local/edge/management_api.ts";

const { uploads } = await deployFunctions();

Deno.test("every function of config.toml is uploaded with its verify_jwt and the functions' import map, and no test or local code", async () => {
  const toml = await Deno.readTextFile(new URL("../../supabase/config.toml", import.meta.url));
  const configured = [...toml.matchAll(/^\[functions\.([\w-]+)\]\s*\n((?:(?!\[)[^\n]*\n?)*)/gm)];
  assertEquals([...uploads.keys()].sort(), configured.map((m) => m[1]).sort());
  for (const [, name, body] of configured) {
    const upload = uploads.get(name)!;
    const verifyJwt = /^verify_jwt\s*=\s*(true|false)/m.exec(body)?.[1] !== "false";
    assertEquals(upload.metadata.verify_jwt, verifyJwt, name);
    assertEquals(upload.metadata.entrypoint_path, `functions/${name}/index.ts`);
    assertEquals(upload.metadata.import_map_path, "functions/import_map.json");
    assert(upload.files.has("functions/import_map.json"), `${name} uploads its import map`);
    const bad = [...upload.files.keys()].filter((p) => notProduction(p));
    assertEquals(bad, [], `${name} uploads test or local code`);
  }
});

Deno.test("notProduction names test code, local code, node_modules and *_test.ts", () => {
  assertEquals(notProduction("tests/support/assert.ts"), "test code (tests/)");
  assertEquals(notProduction("local/edge/check.ts"), "local-only code (local/)");
  assertEquals(notProduction("node_modules/hono/dist/index.js"), "a file under node_modules/");
  assertEquals(notProduction("shared/jwt_test.ts"), "a test file (*_test.ts)");
  assertEquals(notProduction("shared/jwt.ts"), undefined);
});

Deno.test("an upload bundles alone, and the same upload without one of its files does not", async () => {
  const status = uploads.get("status")!;
  const dir = await Deno.makeTempDir({ prefix: "upload-test-" });
  try {
    const bundleOf = async (upload: Upload, name: string) => {
      await Deno.mkdir(`${dir}/${name}`);
      await layOut(upload, `${dir}/${name}`);
      return bundle(upload.metadata.entrypoint_path, `${dir}/${name}-out`, {
        cwd: `${dir}/${name}`,
        config: upload.metadata.import_map_path,
      });
    };
    assert(await bundleOf(status, "whole") > 0);
    const files = new Map(status.files);
    assert(files.delete("shared/errors.ts"), "status uploads shared/errors.ts");
    await assertRejects(
      () => bundleOf({ ...status, files }, "lacking"),
      Error,
      "errors.ts",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
