/**
 * A Discord webhook on loopback that speaks Discord's protocol, for the sandbox and the tests:
 * `POST /api/webhooks/:id/:token[?wait=true]` (200 with the message object when `wait=true`,
 * else 204), Discord's validation errors (`400 {"message","code","errors"}` for an empty
 * message, content over 2000 characters, embeds over their limits, bad JSON), `404`/`401` for an
 * unknown webhook or token, and one rate-limit bucket with `X-RateLimit-*` headers on every
 * answer and, past the bucket, `429 {"message","retry_after","global"}` with `Retry-After`
 * (https://discord.com/developers/docs/topics/rate-limits).
 *
 * Controls for tests: `down` (answers 503), `deleted` (the webhook was deleted: `404
 * {"message": "Unknown Webhook", "code": 10015}`, as Discord answers), `delayMs`,
 * `failNext(n, status)`, `hangNext(n, ms)`, `rateLimitGlobally(ms)`; and what it saw:
 * `messages`, `requests`, `rateLimited` (of which `bucketRateLimited`), `rejected`,
 * `unavailable`, `waitForMessages(n)`.
 *
 * @example
 * ```ts
 * import { startDiscordSimulator } from "./discord.ts";
 *
 * const discord = await startDiscordSimulator({ bucketLimit: 5, bucketWindowMs: 2000 });
 * const env = { DISCORD_WEBHOOK_URL: discord.url };
 * await discord.waitForMessages(1);
 * await discord.close();
 * ```
 */
import { messageWaiters } from "./message_waiters.ts";

export interface DiscordSimulatorOptions {
  /** Requests per bucket window (Discord's webhooks: about 5 per 2 s). Default 5. */
  bucketLimit?: number;
  /** Default 2000. */
  bucketWindowMs?: number;
  webhookId?: string;
  webhookToken?: string;
  /** Called with one line per message received (the sandbox prints them). */
  print?: (line: string) => void;
}

/** A message the simulator accepted. */
export interface ReceivedMessage {
  id: string;
  content: string;
  embeds: unknown[];
  allowedMentions: unknown;
  flags: number;
  /** Mentions Discord would parse from the content (whether or not they ping). */
  mentions: string[];
  /** Whether Discord would ping someone: a mention parsed and `allowed_mentions` permitting it. */
  pinged: boolean;
  receivedAt: number;
}

export interface DiscordSimulator {
  /** The webhook URL (`http://127.0.0.1:<port>/api/webhooks/<id>/<token>`). */
  url: string;
  messages: ReceivedMessage[];
  /** Every request to the webhook route. */
  requests: number;
  /** 429s answered. */
  rateLimited: number;
  /** Of those, the bucket's own (a client spent more than `X-RateLimit-Remaining`), not global. */
  bucketRateLimited: number;
  /** 4xx other than 429 answered. */
  rejected: number;
  /** 503s and injected 5xx answered. */
  unavailable: number;
  /** While true, every request gets 503 (Discord or Cloudflare down). */
  down: boolean;
  /** While true, the webhook is deleted: every request gets 404 with code 10015 (Unknown Webhook). */
  deleted: boolean;
  /** Delay before each answer (timeouts). */
  delayMs: number;
  /** The next `n` requests answer `status` (default 500). */
  failNext(n: number, status?: number): void;
  /** The next `n` requests hang `ms` (past the caller's deadline), then get 504; nothing is posted. */
  hangNext(n: number, ms?: number): void;
  /** The next request gets a global 429 with `retry_after` of `ms`, and the pause holds that long. */
  rateLimitGlobally(ms: number): void;
  /** Resolves once `n` messages arrived; rejects after `timeoutMs`. */
  waitForMessages(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const CONTENT_MAX = 2000;
const EMBEDS_MAX = 10;
const EMBED_TITLE_MAX = 256;
const EMBED_DESCRIPTION_MAX = 4096;
const EMBED_TOTAL_MAX = 6000;
const DISCORD_EPOCH = 1420070400000n;

/** The mentions Discord parses in message content. */
export function parseMentions(content: string): string[] {
  return content.match(/@everyone|@here|<@[!&]?\d+>|<#\d+>/g) ?? [];
}

export function startDiscordSimulator(
  opts: DiscordSimulatorOptions = {},
): Promise<DiscordSimulator> {
  const limit = opts.bucketLimit ?? 5;
  const windowMs = opts.bucketWindowMs ?? 2000;
  const webhookId = opts.webhookId ?? "1100000000000000001";
  const token = opts.webhookToken ?? "sandbox-webhook-token";
  const bucketHash = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
  let windowStart = 0;
  let used = 0;
  let globalUntil = 0;
  let globalNext = 0;
  let failures: { left: number; status: number } = { left: 0, status: 500 };
  let hangs = { left: 0, ms: 0 };
  let seq = 0n;

  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(body === null ? null : JSON.stringify(body), {
      status,
      headers: body === null ? headers : { "content-type": "application/json", ...headers },
    });
  const formError = (field: string, code: string, message: string) => ({
    message: "Invalid Form Body",
    code: 50035,
    errors: { [field]: { _errors: [{ code, message }] } },
  });

  const waiters = messageWaiters("Discord simulator", () => sim.messages.length);
  const sim: DiscordSimulator = {
    url: "",
    messages: [],
    requests: 0,
    rateLimited: 0,
    bucketRateLimited: 0,
    rejected: 0,
    unavailable: 0,
    down: false,
    deleted: false,
    delayMs: 0,
    failNext(n, status = 500) {
      failures = { left: n, status };
    },
    hangNext(n, ms = 1000) {
      hangs = { left: n, ms };
    },
    rateLimitGlobally(ms) {
      globalNext = ms;
    },
    waitForMessages: (n, timeoutMs) => waiters.waitFor(n, timeoutMs),
    close: () => Promise.resolve(),
  };

  /** The bucket's headers after counting (or refusing) this request. */
  const bucketHeaders = (now: number): Record<string, string> => {
    const resetAt = windowStart + windowMs;
    return {
      "x-ratelimit-limit": String(limit),
      "x-ratelimit-remaining": String(Math.max(0, limit - used)),
      "x-ratelimit-reset": (resetAt / 1000).toFixed(3),
      "x-ratelimit-reset-after": (Math.max(0, resetAt - now) / 1000).toFixed(3),
      "x-ratelimit-bucket": bucketHash,
    };
  };

  const handle = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const m = /^\/api(?:\/v\d+)?\/webhooks\/([^/]+)\/([^/]+)\/?$/.exec(url.pathname);
    if (!m) return json(404, { message: "404: Not Found", code: 0 });
    sim.requests++;
    if (sim.delayMs > 0) await new Promise((r) => setTimeout(r, sim.delayMs));
    if (hangs.left > 0) {
      // A gateway that never reaches Discord: the caller times out; nothing is posted.
      hangs.left--;
      await new Promise((r) => setTimeout(r, hangs.ms));
      sim.unavailable++;
      await req.body?.cancel();
      return json(504, { message: "504: Gateway Timeout", code: 0 });
    }
    if (sim.down) {
      sim.unavailable++;
      await req.body?.cancel();
      return json(503, { message: "503: Service Unavailable", code: 0 });
    }
    if (failures.left > 0) {
      failures.left--;
      const status = failures.status;
      if (status >= 500) sim.unavailable++;
      else sim.rejected++;
      await req.body?.cancel();
      return json(status, { message: `${status}: injected failure`, code: 0 });
    }
    if (m[1] !== webhookId || sim.deleted) {
      await req.body?.cancel();
      sim.rejected++;
      return json(404, { message: "Unknown Webhook", code: 10015 });
    }
    if (m[2] !== token) {
      sim.rejected++;
      return json(401, { message: "Invalid Webhook Token", code: 50027 });
    }
    if (req.method !== "POST") {
      sim.rejected++;
      return json(405, { message: "405: Method Not Allowed", code: 0 });
    }
    const now = Date.now();
    if (globalNext > 0) {
      globalUntil = now + globalNext;
      globalNext = 0;
    }
    if (now < globalUntil) {
      sim.rateLimited++;
      await req.body?.cancel();
      const retryAfter = (globalUntil - now) / 1000;
      return json(429, {
        message: "You are being rate limited.",
        retry_after: retryAfter,
        global: true,
      }, {
        "retry-after": String(Math.ceil(retryAfter)),
        "x-ratelimit-global": "true",
        "x-ratelimit-scope": "global",
      });
    }
    if (now >= windowStart + windowMs) {
      windowStart = now;
      used = 0;
    }
    if (used >= limit) {
      sim.rateLimited++;
      sim.bucketRateLimited++;
      await req.body?.cancel();
      const retryAfter = (windowStart + windowMs - now) / 1000;
      return json(429, {
        message: "You are being rate limited.",
        retry_after: retryAfter,
        global: false,
      }, {
        ...bucketHeaders(now),
        "retry-after": String(Math.ceil(retryAfter)),
        "x-ratelimit-scope": "user",
      });
    }
    used++;
    const headers = bucketHeaders(now);
    const reject = (body: unknown) => {
      sim.rejected++;
      return json(400, body, headers);
    };
    let body: Record<string, unknown>;
    try {
      const parsed = JSON.parse(await req.text());
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error();
      body = parsed;
    } catch {
      return reject({ message: "The request body contains invalid JSON.", code: 50109 });
    }
    const content = typeof body.content === "string" ? body.content : "";
    const embeds = Array.isArray(body.embeds) ? body.embeds as Record<string, unknown>[] : [];
    if (content.length > CONTENT_MAX) {
      return reject(
        formError("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."),
      );
    }
    if (embeds.length > EMBEDS_MAX) {
      return reject(formError("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."));
    }
    let total = 0;
    for (const e of embeds) {
      const title = typeof e?.title === "string" ? e.title : "";
      const description = typeof e?.description === "string" ? e.description : "";
      if (title.length > EMBED_TITLE_MAX) {
        return reject(
          formError("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length."),
        );
      }
      if (description.length > EMBED_DESCRIPTION_MAX) {
        return reject(
          formError("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length."),
        );
      }
      total += title.length + description.length;
    }
    if (total > EMBED_TOTAL_MAX) {
      return reject(
        formError("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"),
      );
    }
    if (content.trim() === "" && embeds.length === 0) {
      return reject({ message: "Cannot send an empty message", code: 50006 });
    }
    const allowed = body.allowed_mentions as { parse?: unknown } | undefined;
    if (allowed !== undefined && (typeof allowed !== "object" || allowed === null)) {
      return reject(
        formError(
          "allowed_mentions",
          "MODEL_TYPE_CONVERT",
          "Only dictionaries may be used in a DictType",
        ),
      );
    }
    const parse = Array.isArray(allowed?.parse) ? allowed.parse as string[] : null;
    const mentions = parseMentions(content);
    // Without allowed_mentions, Discord pings everything it parses.
    const pinged = mentions.some((mention) => {
      if (parse === null) return true;
      if (mention === "@everyone" || mention === "@here") return parse.includes("everyone");
      if (mention.startsWith("<@&")) return parse.includes("roles");
      if (mention.startsWith("<@")) return parse.includes("users");
      return false;
    });
    const id = String(((BigInt(now) - DISCORD_EPOCH) << 22n) + (seq++ % 4096n));
    const flags = typeof body.flags === "number" ? body.flags : 0;
    const message: ReceivedMessage = {
      id,
      content,
      embeds,
      allowedMentions: allowed,
      flags,
      mentions,
      pinged,
      receivedAt: now,
    };
    sim.messages.push(message);
    opts.print?.(
      `[discord-sim] message ${sim.messages.length}: ${
        content.replace(/\s*\n\s*/g, " ⏎ ").slice(0, 200)
      }`,
    );
    waiters.arrived();
    if (url.searchParams.get("wait") !== "true") return json(204, null, headers);
    return json(200, {
      id,
      type: 0,
      content,
      embeds,
      channel_id: "1100000000000000002",
      webhook_id: webhookId,
      author: { id: webhookId, username: "Alerts", bot: true },
      timestamp: new Date(now).toISOString(),
      flags,
      mentions: [],
      mention_roles: [],
      mention_everyone: pinged && mentions.some((x) => x === "@everyone" || x === "@here"),
      tts: false,
      pinned: false,
      attachments: [],
    }, headers);
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  sim.url = `http://127.0.0.1:${server.addr.port}/api/webhooks/${webhookId}/${token}`;
  sim.close = async () => {
    await server.shutdown();
  };
  return Promise.resolve(sim);
}
