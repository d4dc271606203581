/**
 * `npm run openapi`: writes docs/openapi.json from the route table (routes.ts). With `--check`
 * it writes nothing and fails when the committed file differs from what it would write (CI runs
 * it: the document is never stale).
 *
 * @example
 * ```ts
 * import { renderOpenApi } from "./generate.ts";
 *
 * const text = renderOpenApi(); // docs/openapi.json's exact content
 * ```
 */
import { openApiDocument } from "./routes.ts";

/** Where the document lives. */
export const OPENAPI_FILE = new URL("../../docs/openapi.json", import.meta.url);

/** The document's text: JSON, two-space indent, a final newline (deno fmt leaves it as is). */
export function renderOpenApi(): string {
  return JSON.stringify(openApiDocument(), null, 2) + "\n";
}

if (import.meta.main) {
  const text = renderOpenApi();
  if (Deno.args.includes("--check")) {
    const committed = await Deno.readTextFile(OPENAPI_FILE).catch(() => "");
    if (committed !== text) {
      console.error("docs/openapi.json is stale: run `npm run openapi` and commit it.");
      Deno.exit(1);
    }
    console.log("docs/openapi.json is up to date.");
  } else {
    await Deno.mkdir(new URL(".", OPENAPI_FILE), { recursive: true });
    await Deno.writeTextFile(OPENAPI_FILE, text);
    console.log(`wrote docs/openapi.json (${Object.keys(openApiDocument().paths).length} paths)`);
  }
}
