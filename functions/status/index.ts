/**
 * status: health and fail-safe state for operators and monitors (health.ts). No caller is
 * required: monitors call it without a token, and a service caller's key adds the details.
 */
import { defineFunction } from "../../shared/platform/app.ts";
import { BaseEnv } from "../../shared/base_env.ts";
import { route } from "../../shared/http/route.ts";
import { serveStandalone } from "../../shared/platform/standalone.ts";
import { health } from "./health.ts";

const statusFunction = defineFunction({
  name: "status",
  env: BaseEnv,
  browser: false,
  build(app, ctx) {
    route(app, "/", { GET: [health(ctx)] });
  },
});

export default statusFunction;

if (import.meta.main) await serveStandalone(statusFunction);
