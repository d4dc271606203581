import { z } from "zod";
import { assert, assertEquals } from "@std/assert";
import { BrowserEnv } from "../../shared/base_env.ts";
import { ConfigError, parseEnv } from "../../shared/env.ts";
import { parseLimits } from "../../shared/limits.ts";

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("parseEnv() names every missing and malformed variable at once, never a value", () => {
  const secretValue = "short-secret";
  const problems = problemsOf(() =>
    parseEnv(BrowserEnv, {
      SUPABASE_JWT_SECRET: secretValue,
      FRONTEND_URL: "https://ok.test,https://bad.test/path",
    })
  );
  assertEquals(problems.length, 3, problems.join(" | "));
  assert(problems.some((p) => p.startsWith("SUPABASE_DB_URL is missing")));
  assert(problems.some((p) => p.startsWith("SUPABASE_JWT_SECRET")));
  assert(problems.some((p) => p.startsWith("FRONTEND_URL")));
  assert(!problems.join(" ").includes(secretValue), "no value is printed");
  assert(!problems.join(" ").includes("bad.test"), "no value is printed");
});

Deno.test("parseEnv() parses FRONTEND_URL into exact origins", () => {
  const env = parseEnv(BrowserEnv, {
    SUPABASE_JWT_SECRET: "x".repeat(32),
    SUPABASE_DB_URL: "postgres://u:p@db:5432/postgres",
    FRONTEND_URL: "https://app.example.com, http://localhost:5173",
  });
  assertEquals(env.FRONTEND_URL, ["https://app.example.com", "http://localhost:5173"]);
});

Deno.test("parseEnv() treats an empty variable as missing", () => {
  const problems = problemsOf(() => parseEnv(z.object({ A: z.string() }), { A: "" }));
  assertEquals(problems, ["A is missing"]);
});

Deno.test("parseLimits() applies defaults and names a malformed limit", () => {
  assertEquals(parseLimits({}).MARKET_DATA_CACHE_TTL_SECONDS, 300);
  assertEquals(parseLimits({}).MARKET_DATA_MAX_STALE_SECONDS, 900);
  assertEquals(parseLimits({ DB_POOL_MAX: "3" }).DB_POOL_MAX, 3);
  assertEquals(
    problemsOf(() => parseLimits({ DB_POOL_MAX: "-1", HTTP_TIMEOUT_MS: "soon" })).length,
    2,
  );
});
