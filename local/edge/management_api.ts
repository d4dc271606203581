/**
 * A recording stand-in for the Supabase Management API, the few routes `supabase functions
 * deploy --use-api --profile supabase-local` calls (the profile sends them to
 * `http://localhost:8080`): it keeps what each deploy uploads (the metadata and every file, by
 * its path in the project), so the edge check can lay out exactly those files and nothing else.
 * Local only: the deploy's counterpart on hosted Supabase bundles the upload server-side.
 *
 * Routes (https://api.supabase.com/api/v1, "functions"):
 * `POST /v1/projects/{ref}/functions/deploy?slug=<name>` (multipart: one `metadata` part, one
 * `file` part per source file) → `201` with the function object; `GET /v1/projects/{ref}/functions`
 * → the functions deployed so far; `PUT /v1/projects/{ref}/functions` (the CLI's bulk update)
 * → the array it received; `GET /v1/projects/{ref}` → the project. Anything else is `404`, so a new call the CLI starts making shows.
 *
 * @example
 * ```ts
 * import { startManagementApi } from "./management_api.ts";
 *
 * const api = await startManagementApi();
 * // … run `supabase functions deploy --use-api --profile supabase-local` …
 * for (const [slug, upload] of api.uploads) console.log(slug, [...upload.files.keys()]);
 * await api.close();
 * ```
 */

/** The `metadata` part of a deploy, as the CLI sends it. */
export interface DeployMetadata {
  entrypoint_path: string;
  import_map_path?: string;
  static_patterns?: string[];
  verify_jwt?: boolean;
  name?: string;
}

/** What one deploy uploaded. */
export interface Upload {
  slug: string;
  metadata: DeployMetadata;
  /** Each file part's bytes, by its name (the file's path as the CLI names it). */
  files: Map<string, Uint8Array>;
}

/** The running stand-in. */
export interface ManagementApi {
  url: string;
  /** The last upload of each function, by slug. */
  uploads: Map<string, Upload>;
  /** Requests it answered `404` (a route the CLI calls that the stand-in lacks). */
  unknown: string[];
  close(): Promise<void>;
}

/** The port the CLI's `supabase-local` profile targets. */
export const MANAGEMENT_API_PORT = 8080;

/** Starts the stand-in on 127.0.0.1:8080; fails clearly when the port is taken. */
export function startManagementApi(): Promise<ManagementApi> {
  const uploads = new Map<string, Upload>();
  const unknown: string[] = [];
  let version = 0;
  const fnObject = (slug: string, verifyJwt?: boolean) => ({
    id: crypto.randomUUID(),
    slug,
    name: slug,
    status: "ACTIVE",
    version: ++version,
    verify_jwt: verifyJwt,
    created_at: Date.now(),
    updated_at: Date.now(),
  });
  const routes = /^\/v1\/projects\/([a-z]{20})\/functions(\/deploy)?$/;

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const m = routes.exec(url.pathname);
    if (m && m[2] && req.method === "POST") {
      const slug = url.searchParams.get("slug") ?? "";
      const form = await req.formData();
      const meta = form.get("metadata");
      if (!slug || typeof meta !== "string") {
        return Response.json({ message: "slug and metadata are required" }, { status: 400 });
      }
      const files = new Map<string, Uint8Array>();
      for (const part of form.getAll("file")) {
        if (typeof part === "string") continue;
        files.set(part.name, new Uint8Array(await part.arrayBuffer()));
      }
      const metadata = JSON.parse(meta) as DeployMetadata;
      uploads.set(slug, { slug, metadata, files });
      return Response.json(fnObject(slug, metadata.verify_jwt), { status: 201 });
    }
    if (m && !m[2] && req.method === "GET") {
      return Response.json(
        [...uploads.values()].map((u) => fnObject(u.slug, u.metadata.verify_jwt)),
      );
    }
    if (m && !m[2] && req.method === "PUT") return Response.json(await req.json());
    const project = /^\/v1\/projects\/([a-z]{20})$/.exec(url.pathname);
    if (project && req.method === "GET") {
      const ref = project[1];
      return Response.json({
        id: ref,
        ref,
        organization_id: "local",
        name: ref,
        region: "local",
        status: "ACTIVE_HEALTHY",
        created_at: new Date(0).toISOString(),
      });
    }
    unknown.push(`${req.method} ${url.pathname}${url.search}`);
    await req.body?.cancel();
    return Response.json({ message: "not found" }, { status: 404 });
  }

  let server: Deno.HttpServer;
  try {
    server = Deno.serve(
      { hostname: "127.0.0.1", port: MANAGEMENT_API_PORT, onListen() {} },
      handle,
    );
  } catch (err) {
    return Promise.reject(
      new Error(
        `The Management API stand-in needs 127.0.0.1:${MANAGEMENT_API_PORT} (the CLI's ` +
          `supabase-local profile): ${err instanceof Error ? err.message : err}`,
      ),
    );
  }
  return Promise.resolve({
    url: `http://127.0.0.1:${MANAGEMENT_API_PORT}`,
    uploads,
    unknown,
    async close() {
      await server.shutdown();
    },
  });
}
