/**
 * The edge check (`npm run check:edge`, run by `.ci/run`): the deployed shape, as a new user
 * deploys it to hosted Supabase, with the real Supabase CLI (the Edge Runtime and the CLI's local
 * stack need Docker, which this machine lacks):
 *
 * 1. `supabase functions deploy --use-api --profile supabase-local` uploads every function of
 *    `supabase/config.toml` to a recording stand-in of the Management API (management_api.ts);
 *    the check prints what each function uploaded and fails when a function was not deployed,
 *    when its upload holds test or local-only code (`tests/`, `local/`, anything under
 *    `node_modules/`, `*_test.ts`) or when the uploaded `verify_jwt` differs from config.toml;
 * 2. each upload is laid out alone in an empty folder and bundled there as the platform bundles
 *    it (`deno bundle --platform deno --code-splitting --config <its import map>`), so a file the
 *    CLI did not upload fails the bundle; each bundle must fit 5 MB (Supabase's limit for
 *    server-side bundling), counting every file of the bundle; the HTML sanitizer's parser is
 *    part of it. The platform deploys an eszip, a module graph in which a dynamic `import()` is
 *    loaded when it runs; code splitting keeps that (a module imported lazily is its own file,
 *    read on first use), where a single-file bundle would parse it, and load the `node:` modules
 *    it imports, at boot;
 * 3. a Postgres database is set up as a Supabase project's is (roles, `auth.uid()`,
 *    `supabase_migrations`) and migrated by `supabase db push --db-url …`;
 * 4. each bundle runs under the Edge Runtime's permissions (network, environment, `/tmp` only;
 *    `EdgeRuntime.waitUntil` preloaded) with only the platform's default secrets (an ES256 JWKS,
 *    the service-role key, an `sb_secret_` key; no JWT secret) plus its own, and is exercised once;
 * 5. the schema is identical before and after (no function runs DDL); a database without the
 *    migrations answers `503 SCHEMA_OUTDATED` naming the version, then `200` once they are
 *    pushed, without a restart;
 * 6. boot time (process start to first answer) is measured against a bare `Deno.serve` bundle
 *    and reported (a figure, not a pass/fail: timings on a shared machine vary; the README keeps
 *    the measured table; the goal is at most 3 × the bare bundle).
 *
 * Prints a table (`--record` also writes it to `local/bench/results/edge.json`), and ends with
 * "N passed, N failed".
 */
import postgres from "postgres";
import { SignJWT } from "jose";
import { dbPush, deployFunctions } from "./supabase_cli.ts";
import { bundle, describeUpload, layOut, notProduction } from "./upload.ts";
import type { Upload } from "./management_api.ts";
import { startBrokerSimulator } from "../sandbox/broker.ts";
import { startDiscordSimulator } from "../sandbox/discord.ts";
import { startMarketDataSimulator } from "../sandbox/market_data.ts";
import { type SimulatedEvent, startStripeSimulator } from "../sandbox/stripe.ts";
import { loadSigningKey } from "../sandbox/signing_key.ts";
import { startSupabaseAuthSimulator } from "../sandbox/supabase_auth.ts";
import { SCHEMA_VERSION } from "../../shared/db/schema_version.ts";
import { freshDatabase } from "../../tests/support/db.ts";
import {
  checkoutCompleted,
  delivery,
} from "../../tests/functions/payment-webhook/stripe_events.ts";

const ROOT = new URL("../../", import.meta.url);
const MB = 1024 * 1024;
/** Every bundle's limit: Supabase's for server-side bundling. */
const BUNDLE_LIMIT = 5 * MB;
/**
 * Boot runs per bundle after one warm-up run (not counted): the platform analyses a bundle once
 * at deploy time, as Deno's dependency-analysis and code caches do after a first run here; the
 * median counts. The bare bundle is measured the same way.
 */
const BOOT_RUNS = Number(Deno.env.get("EDGE_BOOT_RUNS") ?? 3);

const results: { check: string; ok: boolean; detail?: string }[] = [];
function record(check: string, ok: boolean, detail?: string) {
  results.push({ check, ok, detail });
  console.log(`${ok ? "ok  " : "FAIL"} ${check}${detail ? ` — ${detail}` : ""}`);
}
async function step(check: string, fn: () => Promise<string | void>) {
  try {
    record(check, true, (await fn()) ?? undefined);
  } catch (err) {
    record(check, false, err instanceof Error ? err.message : String(err));
  }
}
function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

// ---- 1. bundles --------------------------------------------------------------------------------

/** A function of config.toml: its name, entrypoint and `verify_jwt` (the CLI's default: true). */
interface Configured {
  name: string;
  entry: string;
  verifyJwt: boolean;
}

/** The functions of config.toml. */
async function configuredFunctions(): Promise<Configured[]> {
  const toml = await Deno.readTextFile(new URL("supabase/config.toml", ROOT));
  const out: Configured[] = [];
  for (const m of toml.matchAll(/^\[functions\.([\w-]+)\]\s*\n((?:(?!\[)[^\n]*\n?)*)/gm)) {
    const entry = /^entrypoint\s*=\s*"([^"]+)"/m.exec(m[2])?.[1];
    expect(entry, `functions.${m[1]} names no entrypoint`);
    const verifyJwt = /^verify_jwt\s*=\s*(true|false)/m.exec(m[2])?.[1] !== "false";
    out.push({
      name: m[1],
      entry: new URL(entry, new URL("supabase/", ROOT)).pathname,
      verifyJwt,
    });
  }
  return out;
}

const work = await Deno.makeTempDir({ prefix: "edge-check-" });

/** The text of every file of the bundle in `dir`. */
async function bundleText(dir: string): Promise<string> {
  const parts: string[] = [];
  for await (const f of Deno.readDir(dir)) parts.push(await Deno.readTextFile(`${dir}/${f.name}`));
  return parts.join("\n");
}

// ---- 3. running a bundle as the Edge Runtime does ----------------------------------------------

const shim = `${work}/edge_runtime_shim.js`;
await Deno.writeTextFile(
  shim,
  // What the Edge Runtime provides that a plain Deno does not: background work kept alive.
  "globalThis.EdgeRuntime = { waitUntil(p) { Promise.resolve(p).catch(() => {}); } };\n",
);

interface Running {
  url: string;
  /** When the process was spawned (`performance.now()`). */
  started: number;
  bootMs: number;
  /** CPU time the process used until its first answer (Linux; null elsewhere): steadier under load. */
  bootCpuMs: number | null;
  output: string[];
  stop(): Promise<void>;
}

let nextPort = 18_400 + Math.floor(Math.random() * 1000);

/** Starts a bundle with exactly `env` under edge permissions; resolves at its first answer. */
async function runBundle(
  file: string,
  name: string,
  env: Record<string, string>,
): Promise<Running> {
  const port = nextPort++;
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read=/tmp",
      "--allow-write=/tmp",
      "--no-prompt",
      "--v8-flags=--max-old-space-size=256",
      "--preload",
      shim,
      file,
    ],
    cwd: work,
    clearEnv: true,
    env: { ...env, PORT: String(port), HOME: work, PATH: "/usr/bin:/bin" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      output.push(...chunk.split("\n").filter(Boolean));
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const url = `http://127.0.0.1:${port}/${name}`;
  const stop = async () => {
    if (!exited) child.kill("SIGKILL");
    await status;
    await pumps;
  };
  const deadline = started + 30_000;
  while (true) {
    expect(!exited, `${name} exited at boot: ${output.slice(-5).join(" | ")}`);
    try {
      // Any answer counts: the process is serving.
      await (await fetch(`http://127.0.0.1:${port}/__boot`)).body?.cancel();
      break;
    } catch {
      if (performance.now() > deadline) {
        await stop();
        throw new Error(`${name} did not answer within 30 s: ${output.slice(-5).join(" | ")}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  const bootMs = performance.now() - started;
  return { url, started, bootMs, bootCpuMs: await cpuMs(child.pid), output, stop };
}

/** User + system CPU time of process `pid` in ms, from /proc (clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<number | null> {
  try {
    const fields = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ---- the run ---------------------------------------------------------------------------------

const functions = await configuredFunctions();
const sizes: Record<string, number> = {};
const boots: Record<string, number> = {};
const bootCpus: Record<string, number> = {};
const firstDbAnswers: number[] = [];

let uploads = new Map<string, Upload>();
await step(
  "supabase functions deploy --use-api (the real CLI) uploads every function",
  async () => {
    uploads = (await deployFunctions()).uploads;
    const missing = functions.filter((fn) => !uploads.has(fn.name)).map((fn) => fn.name);
    expect(missing.length === 0, `not deployed: ${missing.join(", ")}`);
    return `${uploads.size} functions`;
  },
);

for (const fn of functions) {
  const upload = uploads.get(fn.name);
  if (!upload) continue;
  console.log(`     ${fn.name} uploaded ${upload.files.size} files: ${describeUpload(upload)}`);
  await step(`${fn.name}: the upload holds no test or local-only code`, () => {
    const bad = [...upload.files.keys()].flatMap((p) => {
      const why = notProduction(p);
      return why ? [`${p} (${why})`] : [];
    });
    expect(bad.length === 0, bad.join(", "));
    return Promise.resolve(`${upload.files.size} files`);
  });
  await step(`${fn.name}: the uploaded verify_jwt is config.toml's`, () => {
    const sent = upload.metadata.verify_jwt;
    expect(sent === fn.verifyJwt, `uploaded verify_jwt ${sent}, config.toml ${fn.verifyJwt}`);
    return Promise.resolve(`verify_jwt ${sent}`);
  });
}

for (const fn of functions) {
  const upload = uploads.get(fn.name);
  if (!upload) continue;
  await step(`bundle ${fn.name} from its upload alone, within its limit`, async () => {
    const source = `${work}/upload-${fn.name}`;
    await Deno.mkdir(source);
    await layOut(upload, source);
    const { entrypoint_path: entry, import_map_path: map } = upload.metadata;
    expect(upload.files.has(entry), `the upload lacks its entrypoint ${entry}`);
    expect(!map || upload.files.has(map), `the upload lacks its import map ${map}`);
    const size = await bundle(entry, `${work}/${fn.name}`, { cwd: source, config: map });
    sizes[fn.name] = size;
    expect(size <= BUNDLE_LIMIT, `${(size / MB).toFixed(2)} MB > ${BUNDLE_LIMIT / MB} MB`);
    const text = await bundleText(`${work}/${fn.name}`);
    expect(
      !/@electric-sql|PGliteSocketServer/.test(text),
      "the bundle contains the embedded database",
    );
    return `${(size / MB).toFixed(2)} MB (limit ${BUNDLE_LIMIT / MB} MB)`;
  });
}

const bare = `${work}/bare_source/index.ts`;
await Deno.mkdir(`${work}/bare_source`);
await Deno.writeTextFile(
  bare,
  'Deno.serve({ port: Number(Deno.env.get("PORT")), onListen() {} }, () => new Response("ok"));\n',
);
await bundle(bare, `${work}/bare`, { cwd: ROOT.pathname });
const bareBoots: number[] = [];
const bareCpus: number[] = [];
await (await runBundle(`${work}/bare/index.js`, "bare", {})).stop(); // warm-up
for (let i = 0; i < BOOT_RUNS; i++) {
  const r = await runBundle(`${work}/bare/index.js`, "bare", {});
  bareBoots.push(r.bootMs);
  if (r.bootCpuMs !== null) bareCpus.push(r.bootCpuMs);
  await r.stop();
}
const bareBoot = median(bareBoots);
const bareCpu = bareCpus.length ? median(bareCpus) : null;

// The project: a database set up as Supabase's, the platform's keys, the upstreams.
const project = await supabaseProject();
const signingKey = await loadSigningKey();
const secretKey = "sb_secret_edgecheck_0123456789abcdef";
const serviceRoleKey = await signingKey.sign({ role: "service_role", iss: "supabase" }, 3600);
const anonKey = await signingKey.sign({ role: "anon", iss: "supabase" }, 3600);
const user = { id: crypto.randomUUID(), email: "edge@check.test", password: "edge-password-1" };
const auth = await startSupabaseAuthSimulator({
  signingKey,
  anonKey,
  apiKeys: [serviceRoleKey],
  users: [user],
});
const broker = await startBrokerSimulator({ keyId: "edge-key", secretKey: "edge-secret" });
const quotes = await startMarketDataSimulator({ keyId: "edge-key", secretKey: "edge-secret" });
const discord = await startDiscordSimulator({});
const STRIPE_WEBHOOK_SECRET = "whsec_edge_check_secret_000000000001";
const stripe = await startStripeSimulator({
  secretKey: "sk_test_edge_check",
  webhookSecret: STRIPE_WEBHOOK_SECRET,
});

/** What hosted Supabase sets for every function (no JWT secret). */
const platformSecrets = (dbUrl: string) => ({
  SUPABASE_URL: auth.url,
  SUPABASE_DB_URL: dbUrl,
  SUPABASE_ANON_KEY: anonKey,
  SUPABASE_SERVICE_ROLE_KEY: serviceRoleKey,
  SUPABASE_JWKS: JSON.stringify(signingKey.jwks),
  SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: "sb_publishable_edgecheck_0123456789" }),
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: secretKey }),
});
/** What `supabase secrets set` adds (names the platform allows). */
const userSecrets = {
  FRONTEND_URL: "https://app.example.com",
  STRIPE_SECRET_KEY: "sk_test_edge_check",
  STRIPE_WEBHOOK_SECRET,
  STRIPE_API_URL: stripe.url,
  BROKER_API_URL: broker.url,
  BROKER_API_KEY_ID: "edge-key",
  BROKER_API_SECRET_KEY: "edge-secret",
  MARKET_DATA_API_URL: quotes.url,
  MARKET_DATA_API_KEY_ID: "edge-key",
  MARKET_DATA_API_SECRET_KEY: "edge-secret",
  DISCORD_WEBHOOK_URL: discord.url,
  DB_SCHEMA_RECHECK_MS: "300",
};

const migrated = await project.create();
await dbPush(migrated.url);
const schemaBefore = await schemaFingerprint(migrated.sql);
const env = { ...platformSecrets(migrated.url), ...userSecrets };

const userToken = await signingKey.sign({
  iss: `${auth.url}/auth/v1`,
  sub: user.id,
  role: "authenticated",
  aud: "authenticated",
});
const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
async function status(res: Response): Promise<number> {
  await res.body?.cancel();
  return res.status;
}

/** Each function's one exercise against its running bundle. */
const exercises: Record<string, (url: string) => Promise<string | void>> = {
  async status(url) {
    const res = await fetch(url);
    expect(res.status === 200, `status ${res.status}: ${await res.text()}`);
  },
  async "broker-order"(url) {
    const order = {
      symbol: "AAPL",
      side: "buy",
      type: "market",
      qty: 1,
      time_in_force: "day",
      note: "<b>edge</b> check &amp; more", // markup: the sanitizer runs in the bundle
    };
    const placed = await fetch(
      url,
      json(order, { ...bearer(userToken), "idempotency-key": `edge-${crypto.randomUUID()}` }),
    );
    const body = await placed.json();
    expect(placed.status === 201, `ES256 user order: ${placed.status} ${JSON.stringify(body)}`);
    const list = await fetch(url, { headers: bearer(userToken) });
    const listed = await list.json();
    expect(list.status === 200 && listed.orders[0]?.id === body.id, "the order is listed");
    expect(listed.orders[0].note === "edge check & more", `note ${listed.orders[0].note}`);
    const hs256 = await new SignJWT({ sub: user.id, role: "authenticated", aud: "authenticated" })
      .setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h")
      .sign(new TextEncoder().encode("a-guessable-legacy-secret-of-32-characters"));
    expect(await status(await fetch(url, { headers: bearer(hs256) })) === 401, "HS256 → 401");
    const impostor = await new SignJWT({
      sub: user.id,
      role: "authenticated",
      aud: "authenticated",
    })
      .setProtectedHeader({ alg: "ES256", kid: signingKey.kid }).setExpirationTime("1h")
      .sign(await otherKeyPrivate());
    expect(
      await status(await fetch(url, { headers: bearer(impostor) })) === 401,
      "another key under the same kid → 401",
    );
    return "201, listed, its note's markup stripped; HS256 401; same-kid impostor 401";
  },
  async "discord-alert"(url) {
    // Markup in the message: the sanitizer's parser is loaded by this first request, under the
    // edge permissions, from the bundle alone.
    const alert = {
      severity: "info",
      title: "Edge check",
      message: "Deployed <b>shape</b> works.",
    };
    for (
      const [who, headers] of [
        ["service-role key", bearer(serviceRoleKey)],
        ["sb_secret_ key", bearer(secretKey)],
        ["sb_secret_ key as apikey", { apikey: secretKey }],
      ] as const
    ) {
      const res = await fetch(url, json(alert, headers));
      expect(res.status === 202, `${who}: ${res.status} ${await res.text()}`);
    }
    expect(await status(await fetch(url, json(alert, bearer(userToken)))) === 403, "user → 403");
    const stored = await migrated.sql`select message from internal.alerts
      where title = 'Edge check'`;
    expect(
      stored.length > 0 && stored.every((r) => r.message === "Deployed shape works."),
      `stored as plain text: ${JSON.stringify(stored)}`,
    );
    return "service-role key and sb_secret_ key 202 (markup stripped in the bundle), user 403";
  },
  async "payment-webhook"(url) {
    const event = checkoutCompleted({ userId: user.id });
    const res = await fetch(url, await delivery(event, STRIPE_WEBHOOK_SECRET));
    expect(res.status === 200, `signed event: ${res.status} ${await res.text()}`);
    const [row] = await migrated.sql`select count(*)::int as n from public.purchases
      where user_id = ${user.id}`;
    expect(row.n === 1, "the purchase was recorded");
    // A purchase whose webhook never arrived, read back from Stripe's API by the catch-up (the
    // stripe library's list under the runtime's permissions).
    await stripe.emit(checkoutCompleted({ userId: user.id }) as SimulatedEvent, { deliver: false });
    const caught = await fetch(`${url}/catch-up`, { method: "POST", headers: bearer(secretKey) });
    const body = await caught.json();
    expect(caught.status === 200 && body.applied === 1, `catch-up: ${JSON.stringify(body)}`);
    return "signed event applied; a lost one caught up from GET /v1/events";
  },
  async auth(url) {
    const res = await fetch(
      `${url}/login`,
      json({ email: user.email, password: user.password }, {
        origin: "https://app.example.com",
      }),
    );
    const body = await res.json();
    expect(res.status === 200 && body.access_token, `login without broker OAuth: ${res.status}`);
    return "login works without broker OAuth variables";
  },
  async "market-data"(url) {
    const res = await fetch(`${url}?symbols=AAPL`, { headers: bearer(userToken) });
    const body = await res.json();
    expect(res.status === 200 && body.quotes?.AAPL, `quote: ${res.status} ${JSON.stringify(body)}`);
  },
  async tools(url) {
    const res = await fetch(url, { headers: bearer(userToken) });
    expect(res.status === 200, `tools list: ${res.status} ${await res.text()}`);
  },
};

for (const fn of functions) {
  if (!sizes[fn.name]) continue;
  const file = `${work}/${fn.name}/index.js`;
  await step(
    `${fn.name} boots under edge permissions with the platform's secrets and serves`,
    async () => {
      const times: number[] = [];
      const cpus: number[] = [];
      let detail: string | void = undefined;
      for (let i = 0; i < BOOT_RUNS; i++) {
        const r = await runBundle(file, fn.name, env);
        times.push(r.bootMs);
        if (r.bootCpuMs !== null) cpus.push(r.bootCpuMs);
        try {
          if (fn.name === "status") {
            // A cold start's first answer that needs the database: the driver's import, the
            // connection and the first probe, then the ping.
            const res = await fetch(r.url);
            await res.body?.cancel();
            expect(res.status === 200, `status ${res.status}`);
            firstDbAnswers.push(performance.now() - r.started);
          }
          if (i === 0) {
            const exercise = exercises[fn.name];
            expect(exercise, `no exercise for ${fn.name}`);
            detail = await exercise(r.url);
          }
        } catch (err) {
          throw new Error(`${(err as Error).message} | ${r.output.slice(-3).join(" | ")}`);
        } finally {
          await r.stop();
        }
      }
      boots[fn.name] = median(times);
      if (cpus.length) bootCpus[fn.name] = median(cpus);
      return `${detail ? `${detail}; ` : ""}boot ${boots[fn.name].toFixed(0)} ms`;
    },
  );
}

await step("no function ran DDL: the schema is identical before and after", async () => {
  const after = await schemaFingerprint(migrated.sql);
  expect(after === schemaBefore, "the schema changed while the functions ran");
});

await step(
  "without the migrations: status 503 SCHEMA_OUTDATED naming the version; after db push, 200 without a restart",
  async () => {
    const bareDb = await project.create();
    const r = await runBundle(`${work}/status/index.js`, "status", {
      ...platformSecrets(bareDb.url),
      ...userSecrets,
    });
    try {
      const res = await fetch(r.url);
      const body = await res.json();
      expect(res.status === 503, `status ${res.status}`);
      expect(res.headers.get("retry-after"), "Retry-After");
      expect(body.error?.code === "SCHEMA_OUTDATED", JSON.stringify(body));
      expect(String(body.error.message).includes(SCHEMA_VERSION), "the message names the version");
      expect(r.output.some((l) => l.includes(SCHEMA_VERSION)), "the log names the missing version");
      await dbPush(bareDb.url);
      const deadline = Date.now() + 10_000;
      let last = 0;
      while (Date.now() < deadline && (last = await status(await fetch(r.url))) !== 200) {
        await new Promise((res) => setTimeout(res, 100));
      }
      expect(last === 200, `still ${last} after the push`);
    } finally {
      await r.stop();
      await bareDb.close();
    }
  },
);

// ---- report ------------------------------------------------------------------------------------

const table = functions.map((fn) => ({
  function: fn.name,
  bundleMB: sizes[fn.name] ? Number((sizes[fn.name] / MB).toFixed(2)) : null,
  limitMB: BUNDLE_LIMIT / MB,
  bootMs: boots[fn.name] ? Math.round(boots[fn.name]) : null,
  bootRatio: boots[fn.name] ? Number((boots[fn.name] / bareBoot).toFixed(2)) : null,
  bootCpuMs: bootCpus[fn.name] ?? null,
  bootCpuRatio: bootCpus[fn.name] && bareCpu
    ? Number((bootCpus[fn.name] / bareCpu).toFixed(2))
    : null,
}));
console.log(
  `\nbare Deno.serve bundle: boot ${bareBoot.toFixed(0)} ms, CPU ${
    bareCpu ?? "?"
  } ms (median of ${BOOT_RUNS})`,
);
if (firstDbAnswers.length) {
  console.log(
    `status: process start to its first database-backed 200 ${
      median(firstDbAnswers).toFixed(0)
    } ms (median of ${firstDbAnswers.length}; boot is to any first answer)`,
  );
}
const worst = Math.max(...Object.values(boots));
console.log(`worst function boot ${worst.toFixed(0)} ms = ${(worst / bareBoot).toFixed(2)} × bare`);
console.table(table);
// `--record` keeps the figures for the README (local/bench/results/edge.json); a plain run
// leaves the tree as it was.
if (Deno.args.includes("--record")) {
  await Deno.writeTextFile(
    new URL("local/bench/results/edge.json", ROOT),
    JSON.stringify(
      {
        measuredAt: new Date().toISOString(),
        bareBootMs: Math.round(bareBoot),
        bareBootCpuMs: bareCpu,
        statusFirstDatabaseAnswerMs: firstDbAnswers.length
          ? Math.round(median(firstDbAnswers))
          : null,
        functions: table,
      },
      null,
      2,
    ) + "\n",
  );
}

await migrated.close();
await Promise.all([
  auth.close(),
  broker.close(),
  quotes.close(),
  discord.close(),
  stripe.close(),
]);
await Deno.remove(work, { recursive: true });
const failed = results.filter((r) => !r.ok).length;
console.log(`\nedge check: ${results.length - failed} passed, ${failed} failed`);
Deno.exit(failed ? 1 : 0);

// ---- helpers -----------------------------------------------------------------------------------

/** Another ES256 key, to sign an impostor token under the project's kid. */
async function otherKeyPrivate(): Promise<CryptoKey> {
  const { privateKey } = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  return privateKey;
}

/** Fresh databases prepared as a hosted Supabase project's are before any migration. */
function supabaseProject() {
  return {
    async create() {
      const db = await freshDatabase();
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      // What a new Supabase project has: its roles, the auth schema with auth.uid(), and the
      // CLI's migration history schema.
      await sql.unsafe(`
        do $$ begin
          if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
          if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin noinherit; end if;
          if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin noinherit bypassrls; end if;
        end $$;
        create schema if not exists auth;
        create or replace function auth.uid() returns uuid language sql stable as $f$
          select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')), '')::uuid
        $f$;
        create schema if not exists supabase_migrations;`);
      return {
        url: db.url,
        sql,
        async close() {
          await sql.end();
          await db.close();
        },
      };
    },
  };
}

/** A digest of everything DDL can change in the project's own schemas. */
async function schemaFingerprint(sql: postgres.Sql): Promise<string> {
  const [row] = await sql`
    with parts as (
      select 'col ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
        || ' ' || coalesce(column_default, '') as part
      from information_schema.columns where table_schema not in ('pg_catalog', 'information_schema')
      union all select 'idx ' || indexdef from pg_indexes where schemaname not in ('pg_catalog')
      union all select 'fn ' || n.nspname || '.' || p.proname || ' ' || md5(coalesce(p.prosrc, ''))
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname not in ('pg_catalog', 'information_schema')
      union all select 'pol ' || schemaname || '.' || tablename || '.' || policyname from pg_policies
      union all select 'trg ' || tgname from pg_trigger where not tgisinternal
      union all select 'ns ' || nspname from pg_namespace
    )
    select md5(string_agg(part, E'\n' order by part)) as digest from parts`;
  return row.digest;
}
