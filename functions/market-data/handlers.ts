/**
 * market-data's request handling: the symbols of the query, and the quotes answer.
 *
 * @example
 * ```ts
 * import type { Hono } from "hono";
 * import { quotesHandler, type QuotesVars } from "./handlers.ts";
 * import type { QuoteService } from "./quotes.ts";
 * declare const app: Hono<QuotesVars>, service: QuoteService;
 * app.get("/", quotesHandler(service, { maxSymbols: 50, now: Date.now }));
 * ```
 */
import type { Context } from "hono";
import type { AppEnv } from "../../shared/platform/app.ts";
import { BadRequest } from "../../shared/errors.ts";
import type { RateLimitVariables } from "../../shared/http/rate_limit.ts";
import type { QuoteService } from "./quotes.ts";
import { clip } from "../../shared/text.ts";

/** market-data's variables: the base ones and the rate-limit hit the cache read carries. */
export type QuotesVars = { Variables: AppEnv["Variables"] & RateLimitVariables };

const SYMBOL = /^[A-Z][A-Z.]{0,9}$/;

/** The distinct symbols of the query, or a `400` naming what is wrong. */
export function parseSymbols(raw: string | undefined, max: number): string[] {
  if (raw === undefined || raw === "") {
    throw new BadRequest("Give 1 to " + max + " symbols: ?symbols=AAPL,MSFT.", "INVALID_SYMBOLS");
  }
  // Bounded before splitting: at most `max` symbols of 10 characters and their commas.
  if (raw.length > max * 11) {
    throw new BadRequest(`At most ${max} symbols per request.`, "TOO_MANY_SYMBOLS");
  }
  const symbols = [...new Set(raw.split(","))];
  const bad = symbols.filter((s) => !SYMBOL.test(s));
  if (bad.length > 0) {
    throw new BadRequest(
      `Symbols must match ^[A-Z][A-Z.]{0,9}$: ${
        bad.slice(0, 5).map((s) => JSON.stringify(clip(s, 20))).join(", ")
      }.`,
      "INVALID_SYMBOLS",
    );
  }
  if (symbols.length > max) {
    throw new BadRequest(`At most ${max} symbols per request.`, "TOO_MANY_SYMBOLS");
  }
  return symbols;
}

/**
 * `GET /?symbols=…`: the quotes, with the route's rate-limit hit counted in the same statement
 * as the cache read (or alone when the in-process cache answers).
 */
export function quotesHandler(
  service: QuoteService,
  opts: { maxSymbols: number; now: () => number },
) {
  return async function quotes(c: Context<QuotesVars>): Promise<Response> {
    const symbols = parseSymbols(c.req.query("symbols"), opts.maxSymbols);
    const { quotes, notFound } = await service.get(symbols, c.var.rateLimitHit);
    return c.json({
      quotes,
      asOf: new Date(opts.now()).toISOString(),
      ...(notFound.length > 0 ? { notFound } : {}),
    });
  };
}
