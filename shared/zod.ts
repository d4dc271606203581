/**
 * zod, as the project uses it: `import * as z from "./zod.ts"`, then `z.string()` and so on.
 *
 * Why not `import { z } from "zod"`: that namespace is all of zod (forty locales, JSON Schema
 * conversion, every schema kind), and a bundler must keep the whole of a namespace it cannot see
 * through: about 760 KB in every function's bundle, parsed and run before its first answer (about
 * 30 ms of a cold start here, measured by `npm run check:edge`). Named re-exports let it keep only
 * what is used. A name the code needs is added here.
 *
 * @example
 * ```ts
 * import * as z from "./zod.ts";
 *
 * const Order = z.strictObject({ symbol: z.string().min(1) });
 * type Order = z.infer<typeof Order>;
 * Order.parse({ symbol: "AAPL" }) satisfies Order;
 * ```
 *
 * @module
 */
export {
  array,
  boolean,
  coerce,
  discriminatedUnion,
  enum,
  guid,
  instanceof,
  iso,
  literal,
  NEVER,
  number,
  object,
  record,
  strictObject,
  string,
  toJSONSchema,
  union,
  unknown,
  ZodError,
} from "zod";
export type { infer, input, output, ZodType } from "zod";
