/**
 * The fixed allowlist of tools and the one way to run one: looked up in a `Map` (so a name such
 * as `__proto__` or `constructor` is just an unknown key, never a property of some prototype),
 * parameters validated by the tool's own strict zod schema, the call raced against its deadline,
 * and the result checked (finite numbers only) and bounded before it is answered.
 *
 * @example
 * ```ts
 * import { greeksTool } from "./greeks.ts";
 * import { ToolRegistry } from "./registry.ts";
 *
 * const registry = new ToolRegistry(
 *   [greeksTool({ minExpirySeconds: 60, deadlineMs: 1_000 })],
 *   { maxOutputBytes: 4096, now: Date.now },
 * );
 * const params = {
 *   type: "call",
 *   spot: 49,
 *   strike: 50,
 *   volatility: 0.2,
 *   rate: 0.05,
 *   expiresAt: "2027-01-15T21:00:00Z",
 * };
 * const json = await registry.execute("options.greeks", params, AbortSignal.timeout(5_000));
 * ```
 */
import * as z from "../../shared/zod.ts";
import { HttpError } from "../../shared/errors.ts";
import { validate } from "../../shared/http/validation.ts";
import { clip } from "../../shared/text.ts";

/** What a tool's handler may use besides its parameters. */
export interface ToolContext {
  /** Aborted at the call's deadline (reason: ToolTimedOut) or when the client goes away. */
  signal: AbortSignal;
  now: () => number;
}

/** One tool: a name, a summary, a strict schema, and a handler of validated parameters only. */
export interface Tool {
  name: string;
  summary: string;
  params: z.ZodType;
  deadlineMs: number;
  run(params: unknown, ctx: ToolContext): Promise<object>;
}

/** A listed tool, as `GET /tools` answers it. */
export interface ToolListing {
  name: string;
  summary: string;
  parameters: Record<string, unknown>;
}

/** The tool is not in the allowlist. */
export class ToolNotFound extends HttpError {
  constructor(name: string) {
    super(404, "TOOL_NOT_FOUND", `No tool is named ${JSON.stringify(clip(name, 64))}.`);
  }
}

/** The call ran past its deadline; nothing partial is answered. */
export class ToolTimedOut extends HttpError {
  constructor(name: string, deadlineMs: number) {
    super(504, "TOOL_TIMEOUT", `The ${name} tool did not finish within ${deadlineMs} ms.`);
  }
}

/** The request body of `POST /tools/execute`. */
export const ExecuteRequest = z.strictObject({
  tool: z.string().min(1).max(128),
  params: z.unknown().optional(),
});

export interface RegistryOptions {
  /** Largest JSON result answered (TOOLS_MAX_OUTPUT_BYTES). */
  maxOutputBytes: number;
  now?: () => number;
}

export class ToolRegistry {
  readonly #tools = new Map<string, Tool>();
  readonly #listing: ToolListing[];
  readonly #maxOutputBytes: number;
  readonly #now: () => number;

  constructor(tools: readonly Tool[], opts: RegistryOptions) {
    if (!(opts.maxOutputBytes > 0)) throw new Error("maxOutputBytes must be positive");
    for (const tool of tools) {
      if (this.#tools.has(tool.name)) throw new Error(`Tool ${tool.name} is registered twice`);
      if (!(tool.deadlineMs > 0)) throw new Error(`Tool ${tool.name} needs a positive deadline`);
      this.#tools.set(tool.name, tool);
    }
    this.#maxOutputBytes = opts.maxOutputBytes;
    this.#now = opts.now ?? Date.now;
    // Computed once at boot: z.toJSONSchema throws on a schema it cannot represent, so a bad
    // schema stops the function from booting instead of failing a request.
    this.#listing = tools.map((t) => ({
      name: t.name,
      summary: t.summary,
      parameters: z.toJSONSchema(t.params, { io: "input" }) as Record<string, unknown>,
    }));
  }

  list(): readonly ToolListing[] {
    return this.#listing;
  }

  /**
   * Runs `name` with `params`: ToolNotFound (404), ValidationFailed (400), the tool's own typed
   * errors, ToolTimedOut (504). Returns the result as JSON text within the output bound.
   */
  async execute(name: string, params: unknown, signal?: AbortSignal): Promise<string> {
    const tool = this.#tools.get(name);
    if (!tool) throw new ToolNotFound(name);
    const valid = validate(tool.params, params ?? {});
    const deadline = new AbortController();
    const timedOut = new ToolTimedOut(tool.name, tool.deadlineMs);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        deadline.abort(timedOut);
        reject(timedOut);
      }, tool.deadlineMs);
    });
    const combined = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
    let result: object;
    try {
      // The race answers at the deadline even if a handler ignored its signal.
      result = await Promise.race([tool.run(valid, { signal: combined, now: this.#now }), expired]);
    } finally {
      clearTimeout(timer);
    }
    const text = JSON.stringify(result, (_key, value) => {
      if (typeof value === "number" && !Number.isFinite(value)) {
        // A bug, not the caller's fault: the boundary logs it and answers a generic 500.
        throw new Error(`Tool ${tool.name} produced a non-finite number`);
      }
      return value;
    });
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > this.#maxOutputBytes) {
      throw new Error(`Tool ${tool.name} produced ${bytes} bytes, over the output bound`);
    }
    return text;
  }
}
