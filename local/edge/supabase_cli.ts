/**
 * The real Supabase CLI (the npm package `supabase`, pinned in package.json), run the two ways a
 * user deploys without Docker: `supabase db push --db-url …` applies `supabase/migrations/` to a
 * database, and `supabase functions deploy --use-api` uploads each function of
 * `supabase/config.toml`, here to the recording stand-in of the Management API
 * (management_api.ts). The tests' server template and the edge check use it, so a CLI release
 * that breaks users breaks CI first. Local only (tests and the edge check).
 *
 * @example
 * ```ts
 * import { dbPush } from "./supabase_cli.ts";
 *
 * await dbPush("postgres://postgres@127.0.0.1:5432/scratch"); // every pending migration applied
 * ```
 */
import { startManagementApi, type Upload } from "./management_api.ts";

const ROOT = new URL("../../", import.meta.url);

/** The CLI's executable, installed by `npm ci`. */
export const SUPABASE_BIN = decodeURIComponent(
  new URL("node_modules/.bin/supabase", ROOT).pathname,
);

/** Whether the CLI is installed (it is after `npm ci`). */
export async function cliInstalled(): Promise<boolean> {
  try {
    return (await Deno.stat(SUPABASE_BIN)).isFile;
  } catch {
    return false;
  }
}

/** Runs the CLI in the project root; throws with its output when it fails. */
async function run(args: string[], env: Record<string, string> = {}): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(SUPABASE_BIN, {
    args,
    cwd: decodeURIComponent(ROOT.pathname),
    env: { SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (!success) throw new Error(`supabase ${args[0]} ${args[1] ?? ""} failed:\n${text.trim()}`);
  return text;
}

/** `db_url` with `sslmode=disable` (local servers have no TLS; the CLI insists on it otherwise). */
function withoutTls(dbUrl: string): string {
  const url = new URL(dbUrl);
  if (!url.searchParams.has("sslmode")) url.searchParams.set("sslmode", "disable");
  return url.toString();
}

/**
 * `supabase db push --db-url <url> --yes`: applies the pending migrations and records them in
 * `supabase_migrations.schema_migrations`. Returns the CLI's output.
 */
export function dbPush(dbUrl: string): Promise<string> {
  return run(["db", "push", "--db-url", withoutTls(dbUrl), "--yes"]);
}

/** A project ref as the CLI requires it: 20 lowercase letters. */
export const LOCAL_PROJECT_REF = "edgecheckprojectlocl";

/**
 * `supabase functions deploy --use-api --profile supabase-local` of every function of
 * config.toml, against the recording stand-in on 127.0.0.1:8080; returns what each uploaded.
 */
export async function deployFunctions(): Promise<{ uploads: Map<string, Upload>; log: string }> {
  const api = await startManagementApi();
  try {
    const log = await run(
      [
        "functions",
        "deploy",
        "--use-api",
        "--project-ref",
        LOCAL_PROJECT_REF,
        "--profile",
        "supabase-local",
      ],
      // A syntactically valid personal access token: the stand-in accepts any.
      { SUPABASE_ACCESS_TOKEN: `sbp_${"0".repeat(40)}` },
    );
    if (api.unknown.length) {
      throw new Error(`the CLI called routes the stand-in lacks: ${api.unknown.join(", ")}`);
    }
    return { uploads: api.uploads, log };
  } finally {
    await api.close();
  }
}
