// The gateway's public HTTP API, as the page uses it: the OpenAI chat route
// (streamed as Server-Sent Events) and Docker Model Runner's model routes.
// Every path is on the page's own origin; the CSP forbids any other.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const UNREACHABLE = "cannot reach corral's HTTP gateway; is the supervisor running (corral serve)?";

function errorFrom(status, body, retryAfter) {
  const error = body && typeof body.error === "object" && body.error !== null ? body.error : {};
  const message = typeof error.message === "string" ? error.message : `the gateway answered HTTP ${status}`;
  const code = typeof error.code === "string" ? error.code : `http_${status}`;
  return new ApiError(status, code, message, retryAfter);
}

// A gateway started with CORRAL_API_KEY answers 401 without the key. The
// page then asks for it (see app.js) and keeps it in sessionStorage: this
// tab only, gone when the tab closes, never in the saved chats.
const KEY_ITEM = "corral-api-key";
let askKey = null;
let asking = null;

/** `ask(wrong)` resolves to a key typed by the user, or null to give up. */
export function whenKeyNeeded(ask) {
  askKey = ask;
}

function withKey(init) {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { ...init, headers: { ...init.headers, Authorization: `Bearer ${key}` } } : init;
}

async function newKey() {
  // Every request refused at once waits on the same question.
  asking ??= askKey(sessionStorage.getItem(KEY_ITEM) !== null).finally(() => (asking = null));
  const key = await asking;
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  return key;
}

async function request(path, init = {}) {
  for (;;) {
    const sentWith = sessionStorage.getItem(KEY_ITEM);
    let response;
    try {
      response = await fetch(path, withKey({ cache: "no-store", ...init }));
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "unreachable", UNREACHABLE);
    }
    if (response.status !== 401 || !askKey) return response;
    // Another request may have got a new key while this one was out.
    if (sessionStorage.getItem(KEY_ITEM) !== sentWith) continue;
    if (!(await newKey())) return response;
  }
}

async function json(path, init) {
  const response = await request(path, init);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, body, response.headers.get("Retry-After"));
  return body;
}

function post(body, headers = {}) {
  return { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify(body) };
}

/** Catalog and store models: [{id, tags, config: {size, context_size, ...}}]. */
export const listModels = () => json("/models");

/** Loaded models, one row per worker (see gateway/engines_routes.py). */
export const listRunning = () => json("/engines/ps");

export const unloadModel = (name) => json("/engines/unload", post({ models: [name] }));

/** Docker Model Runner's preload: the model loads, nothing is generated. */
export const loadModel = (name) =>
  json("/engines/v1/chat/completions", post({ model: name, messages: [{ role: "user", content: "" }] }, { "X-Preload-Only": "true" }));

/**
 * One streamed chat answer. `onPiece(text)` gets each piece as it arrives.
 * Resolves to {finishReason, usage}; rejects with an ApiError (an HTTP error
 * before the stream, or an error event in it), or an AbortError when
 * `signal` aborts (closing the connection cancels the answer at the worker).
 */
export async function streamChat(body, signal, onPiece) {
  const response = await request("/v1/chat/completions", { ...post({ ...body, stream: true, stream_options: { include_usage: true } }), signal });
  if (!response.ok) {
    const error = await response.json().catch(() => null);
    throw errorFrom(response.status, error, response.headers.get("Retry-After"));
  }
  const result = { finishReason: null, usage: null };
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "unreachable", "the connection to the gateway broke in the middle of the answer");
    }
    if (chunk.done) break;
    buffer += chunk.value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (readEvent(event, result, onPiece)) return result;
    }
  }
  throw new ApiError(0, "unreachable", "the answer ended before the gateway finished it");
}

/** One SSE event; true at `[DONE]`. */
function readEvent(event, result, onPiece) {
  const data = event
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).trimStart())
    .join("\n");
  if (data === "") return false;
  if (data === "[DONE]") return true;
  const frame = JSON.parse(data);
  if (frame.error) throw errorFrom(500, frame, null);
  const choice = frame.choices && frame.choices[0];
  if (choice) {
    const piece = choice.delta && choice.delta.content;
    if (piece) onPiece(piece);
    if (choice.finish_reason) result.finishReason = choice.finish_reason;
  }
  if (frame.usage) result.usage = frame.usage;
  return false;
}
