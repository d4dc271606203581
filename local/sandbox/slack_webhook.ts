/**
 * A Slack-style incoming webhook on loopback (the alert fallback channel,
 * ALERT_FALLBACK_WEBHOOK_URL), for the sandbox and the tests: `POST /services/<path>` with
 * `{"text": "…"}` answers `200 ok` as Slack does, `400 invalid_payload` for a body that is not
 * JSON, `400 no_text` without text, `404 no_service` for another path
 * (https://api.slack.com/messaging/webhooks#handling_errors). It records what it receives.
 *
 * Controls for tests: `down` (answers 503); what it saw: `messages`, `requests`,
 * `waitForMessages(n)`.
 *
 * @example
 * ```ts
 * import { startSlackWebhookSimulator } from "./slack_webhook.ts";
 *
 * const slack = await startSlackWebhookSimulator();
 * const env = { ALERT_FALLBACK_WEBHOOK_URL: slack.url };
 * await slack.waitForMessages(1);
 * await slack.close();
 * ```
 */
import { messageWaiters } from "./message_waiters.ts";

export interface SlackWebhookSimulatorOptions {
  /** Called with one line per message received (the sandbox prints them). */
  print?: (line: string) => void;
}

/** A message the simulator accepted. */
export interface SlackMessage {
  text: string;
  receivedAt: number;
}

export interface SlackWebhookSimulator {
  /** The webhook URL (`http://127.0.0.1:<port>/services/T000/B000/<secret>`). */
  url: string;
  messages: SlackMessage[];
  /** Every request to the webhook path. */
  requests: number;
  /** While true, every request gets 503. */
  down: boolean;
  /** Resolves once `n` messages arrived; rejects after `timeoutMs`. */
  waitForMessages(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const PATH = "/services/T00000000/B00000000/sandboxfallbacksecret";

export function startSlackWebhookSimulator(
  opts: SlackWebhookSimulatorOptions = {},
): Promise<SlackWebhookSimulator> {
  const text = (status: number, body: string) =>
    new Response(body, { status, headers: { "content-type": "text/plain" } });

  const waiters = messageWaiters("Slack webhook simulator", () => sim.messages.length);
  const sim: SlackWebhookSimulator = {
    url: "",
    messages: [],
    requests: 0,
    down: false,
    waitForMessages: (n, timeoutMs) => waiters.waitFor(n, timeoutMs),
    close: () => Promise.resolve(),
  };

  const handle = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname !== PATH) {
      await req.body?.cancel();
      return text(404, "no_service");
    }
    sim.requests++;
    if (sim.down) {
      await req.body?.cancel();
      return text(503, "service_unavailable");
    }
    if (req.method !== "POST") return text(405, "invalid_method");
    let body: unknown;
    try {
      body = JSON.parse(await req.text());
    } catch {
      return text(400, "invalid_payload");
    }
    const message = (body as { text?: unknown } | null)?.text;
    if (typeof message !== "string" || message.trim() === "") return text(400, "no_text");
    sim.messages.push({ text: message, receivedAt: Date.now() });
    opts.print?.(
      `[fallback-sim] message ${sim.messages.length}: ${
        message.replace(/\s*\n\s*/g, " ⏎ ").slice(0, 200)
      }`,
    );
    waiters.arrived();
    return text(200, "ok");
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  sim.url = `http://127.0.0.1:${server.addr.port}${PATH}`;
  sim.close = async () => {
    await server.shutdown();
  };
  return Promise.resolve(sim);
}
