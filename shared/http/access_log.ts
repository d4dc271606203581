/**
 * One access line per answered request: request id, method, route, status and duration.
 *
 * An answered CORS preflight is not written: it has no effect and names no caller, browsers send
 * one per endpoint per `CORS_MAX_AGE_SECONDS`, and the platform's invocation log records it
 * anyway. Its line was a third of a preflight's cost. A refused preflight (`403`) is written.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { accessLog } from "./access_log.ts";
 * import { requestId, type RequestIdVariables } from "./request_id.ts";
 * import { createLogger } from "../logger.ts";
 *
 * const app = new Hono<{ Variables: RequestIdVariables }>();
 * app.use(requestId, accessLog(createLogger()));
 * ```
 */
import type { MiddlewareHandler } from "hono";
import type { Logger } from "../logger.ts";
import type { RequestIdVariables } from "./request_id.ts";

/** The access-log middleware, writing to `log`. */
export function accessLog(log: Logger): MiddlewareHandler<{ Variables: RequestIdVariables }> {
  return async function accessLog(c, next) {
    const started = performance.now();
    await next();
    if (c.req.method === "OPTIONS" && c.res.status === 204) return;
    log.info("request", {
      requestId: c.get("requestId"),
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    });
  };
}
