/**
 * tools' guards and handlers, as factories over the registry, with the variables they share
 * declared once (Hono's `Variables` pattern): `validExecute` sets `c.var.execute`, the handler
 * reads it.
 *
 * - `GET /` lists the tools with the JSON Schema of their parameters (computed once, at boot).
 * - `POST /execute {"tool", "params"}` runs one (registry.ts): `404 TOOL_NOT_FOUND`, `400
 *   VALIDATION_FAILED` with issues, `504 TOOL_TIMEOUT` past its deadline, else `200` with the
 *   tool's result.
 * Every answer, refusals included, carries `Cache-Control: private, no-store` (`noStore`):
 * results are per request.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { noStore } from "../../shared/http/no_store.ts";
 * import { executeTool, listTools, type ToolsVars, validExecute } from "./handlers.ts";
 * import { greeksTool } from "./greeks.ts";
 * import { ToolRegistry } from "./registry.ts";
 *
 * const registry = new ToolRegistry([greeksTool({ minExpirySeconds: 60, deadlineMs: 1_000 })], {
 *   maxOutputBytes: 4096,
 * });
 * const app = new Hono<ToolsVars>();
 * app.get("/", noStore, listTools(registry));
 * app.post("/execute", noStore, validExecute, executeTool(registry));
 * ```
 */
import { whileClientWaits } from "../../shared/http/client_gone.ts";
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import type * as z from "../../shared/zod.ts";
import type { AppEnv } from "../../shared/platform/app.ts";
import { readJson } from "../../shared/http/validation.ts";
import { ExecuteRequest, type ToolRegistry } from "./registry.ts";

const JSON_TYPE = { "content-type": "application/json; charset=utf-8" };

/** What tools' guards give its handlers. */
export type ToolsVars = {
  Variables: AppEnv["Variables"] & {
    /** `POST /execute`'s body: which tool, and its parameters (checked by the tool's schema). */
    execute: z.infer<typeof ExecuteRequest>;
  };
};

/** The execute body, validated strictly (the tool's parameters are checked when it runs). */
export const validExecute = createMiddleware<ToolsVars>(async function validExecute(c, next) {
  c.set("execute", await readJson(c, ExecuteRequest));
  await next();
});

/** `GET /`: the tools and their parameters' JSON Schema. */
export function listTools(registry: ToolRegistry) {
  const listing = JSON.stringify({ tools: registry.list() });
  return function listTools(c: Context<ToolsVars>): Response {
    return c.body(listing, 200, JSON_TYPE);
  };
}

/** `POST /execute`: runs `c.var.execute`'s tool under its deadline, stopped if the client leaves. */
export function executeTool(registry: ToolRegistry) {
  return async function executeTool(c: Context<ToolsVars>): Promise<Response> {
    const { tool, params } = c.var.execute;
    const result = await whileClientWaits(
      c.req.raw,
      (clientGone) => registry.execute(tool, params, clientGone),
    );
    return c.body(result, 200, JSON_TYPE);
  };
}
