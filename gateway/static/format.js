// How numbers, times and errors read on the page.

export function formatBytes(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** When a loaded model unloads, from Unix time `expiresAt`. */
export function formatUnload(expiresAt, nowS = Date.now() / 1000) {
  if (expiresAt === null || expiresAt === undefined) return "never";
  return expiresAt <= nowS ? "now" : `in ${formatDuration(expiresAt - nowS)}`;
}

/** The line under an answer: tokens, tokens/s, time to first token. */
export function formatStats(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.tokens !== null) parts.push(`${stats.estimated ? "≈" : ""}${stats.tokens} tokens`);
  if (stats.tokensPerS !== null) parts.push(`${stats.tokensPerS.toFixed(1)} tokens/s`);
  if (stats.ttftMs !== null) parts.push(`first token ${Math.round(stats.ttftMs)} ms`);
  const endings = { stopped: "stopped", length: "cut at the token limit", error: "cut by an error" };
  if (endings[stats.finish]) parts.push(endings[stats.finish]);
  return parts.join(" · ");
}

const TITLES = {
  busy: "The model is busy",
  insufficient_memory: "Not enough memory",
  worker_crashed: "The model's worker crashed",
  crash_loop: "The model keeps crashing",
  cancelled: "The answer was cancelled",
  model_not_found: "Model not found",
  model_load_failed: "The model failed to load",
  bad_request: "Bad request",
  unreachable: "Gateway unreachable",
  shutting_down: "corral is stopping",
  supervisor_unreachable: "Supervisor unreachable",
};

/** {title, text} for an ApiError (or anything thrown). */
export function describeError(error) {
  const title = TITLES[error.code] || "Error";
  let text = String(error.message || error);
  if (error.code === "busy" && error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  return { title, text };
}
