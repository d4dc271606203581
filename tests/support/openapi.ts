/**
 * Holds a real answer to docs/openapi.json: `assertMatchesOpenApi(method, path, status, res)`
 * finds the operation and its documented status, then validates the body against the response's
 * JSON Schema with Ajv's 2020-12 dialect (the dialect OpenAPI 3.1 uses) and every documented
 * header: a required one must be present, and each present one must match its schema. An
 * undocumented status, a body the document does not describe, a missing `x-request-id`: each
 * fails, naming what differs.
 *
 * @example
 * ```ts
 * import { assertMatchesOpenApi } from "./openapi.ts";
 *
 * const res = await fetch("http://127.0.0.1:54321/functions/v1/status");
 * await assertMatchesOpenApi("GET", "/status", 200, res); // returns the parsed body
 * ```
 */
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

type Json = Record<string, unknown>;

const DOC = JSON.parse(
  await Deno.readTextFile(new URL("../../docs/openapi.json", import.meta.url)),
) as Json;
const DOC_ID = "https://trading-edge-functions.local/openapi.json";

// strict: false — the document holds OpenAPI's keywords (paths, components, …) next to the
// schemas; Ajv validates only the schemas it is pointed at.
// deno-lint-ignore no-explicit-any
const ajv = new (Ajv2020 as any)({ strict: false, allErrors: true });
// deno-lint-ignore no-explicit-any
(addFormats as any)(ajv);
ajv.addSchema({ ...DOC, $id: DOC_ID });

/** A JSON pointer segment. */
const seg = (s: string) => s.replaceAll("~", "~0").replaceAll("/", "~1");

/** The object at `#/…` of the document, following one `$ref`. */
function resolve(node: unknown): Json {
  const r = (node as Json | undefined)?.$ref;
  if (typeof r !== "string") return node as Json;
  return r.slice(2).split("/").reduce<Json>(
    (at, s) => at[s.replaceAll("~1", "/").replaceAll("~0", "~")] as Json,
    DOC,
  );
}

const validators = new Map<string, (value: unknown) => boolean>();

/** A compiled validator of the schema at `pointer` in the document. */
// deno-lint-ignore no-explicit-any
function validatorAt(pointer: string): ((value: unknown) => boolean) & { errors?: any } {
  let v = validators.get(pointer);
  if (!v) {
    v = ajv.compile({ $ref: `${DOC_ID}#${pointer}` }) as (value: unknown) => boolean;
    validators.set(pointer, v);
  }
  return v;
}

/** Every status the document lists for an operation. */
export function documentedStatuses(method: string, path: string): number[] {
  const op = (DOC.paths as Json)[path] as Json | undefined;
  const responses = (op?.[method.toLowerCase()] as Json | undefined)?.responses as Json;
  return responses ? Object.keys(responses).map(Number) : [];
}

/**
 * Validates `res` (its status, body and headers) against the operation `method path` (a path
 * template of the document, such as `/broker-order` or `/auth/login`) and its response `status`;
 * throws naming every difference. Returns the parsed body (`null` when there is none).
 */
export async function assertMatchesOpenApi(
  method: string,
  path: string,
  status: number,
  res: Response,
): Promise<unknown> {
  const text = await res.text();
  const where = `${method} ${path} → ${res.status}`;
  if (res.status !== status) {
    throw new Error(`${where}: expected status ${status}; body ${text.slice(0, 300)}`);
  }
  const m = method.toLowerCase();
  const op = ((DOC.paths as Json)[path] as Json | undefined)?.[m] as Json | undefined;
  if (!op) throw new Error(`${where}: the document has no operation ${method} ${path}`);
  const response = (op.responses as Json)[String(status)] as Json | undefined;
  if (!response) {
    throw new Error(
      `${where}: status ${status} is not documented (documented: ${
        Object.keys(op.responses as Json).join(", ")
      })`,
    );
  }
  const problems: string[] = [];
  const base = `/paths/${seg(path)}/${m}/responses/${status}`;

  const content = response.content as Json | undefined;
  let body: unknown = null;
  if (content?.["application/json"]) {
    const type = res.headers.get("content-type") ?? "";
    if (!type.startsWith("application/json")) problems.push(`content-type is ${type || "absent"}`);
    try {
      body = JSON.parse(text);
    } catch {
      problems.push(`the body is not JSON: ${text.slice(0, 200)}`);
    }
    if (problems.length === 0) {
      const validate = validatorAt(`${base}/content/application~1json/schema`);
      if (!validate(body)) {
        problems.push(
          `the body does not match the schema: ${ajv.errorsText(validate.errors)}; body ${
            text.slice(0, 500)
          }`,
        );
      }
    }
  } else if (text !== "") problems.push(`a body the document does not describe: ${text}`);

  for (const [name, header] of Object.entries((response.headers ?? {}) as Json)) {
    const h = resolve(header);
    const value = res.headers.get(name);
    if (value === null) {
      if (h.required) problems.push(`header ${name} is required and absent`);
      continue;
    }
    const validate = ajv.compile(resolveSchema(h.schema));
    if (!validate(value)) {
      problems.push(`header ${name}: ${JSON.stringify(value)} ${ajv.errorsText(validate.errors)}`);
    }
  }
  if (problems.length) {
    throw new Error(`${where} differs from docs/openapi.json:\n  ${problems.join("\n  ")}`);
  }
  return body;
}

function resolveSchema(schema: unknown): Json {
  return resolve(schema);
}
