// Conversations are kept in this browser's localStorage, as one JSON
// document, newest first. What is read back is checked field by field: the
// page never trusts its own storage more than a model's answer.

const KEY = "corral.chats.v1";
const MAX_CHATS = 50;
// localStorage holds about 5 MB per origin: a long answer is kept cut.
const MAX_SAVED_CHARS = 200_000;
const ROLES = new Set(["user", "assistant", "error"]);

const text = (value, fallback = "") => (typeof value === "string" ? value : fallback);
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

function id() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

export function newChat(settings = {}) {
  return {
    id: id(),
    title: "",
    model: text(settings.model),
    system: text(settings.system),
    temperature: text(settings.temperature),
    maxTokens: text(settings.maxTokens),
    messages: [],
    updated: Date.now(),
  };
}

function readStats(stats) {
  if (!stats || typeof stats !== "object") return null;
  return {
    tokens: number(stats.tokens),
    tokensPerS: number(stats.tokensPerS),
    ttftMs: number(stats.ttftMs),
    finish: text(stats.finish),
    estimated: stats.estimated === true,
  };
}

function readMessage(message) {
  if (!message || !ROLES.has(message.role)) return null;
  return {
    role: message.role,
    content: text(message.content),
    title: text(message.title),
    stats: readStats(message.stats),
  };
}

function readChat(chat) {
  if (!chat || typeof chat.id !== "string" || !Array.isArray(chat.messages)) return null;
  return {
    ...newChat(chat),
    id: chat.id,
    title: text(chat.title),
    messages: chat.messages.map(readMessage).filter(Boolean),
    updated: number(chat.updated) || 0,
  };
}

/** {current, chats} as saved, or a fresh state. */
export function loadChats() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(KEY));
  } catch {
    saved = null;
  }
  const chats = saved && Array.isArray(saved.chats) ? saved.chats.map(readChat).filter(Boolean) : [];
  const current = saved && chats.some((c) => c.id === saved.current) ? saved.current : null;
  return { current, chats };
}

function trimmed(chat) {
  const messages = chat.messages.map((m) =>
    m.content.length > MAX_SAVED_CHARS ? { ...m, content: m.content.slice(0, MAX_SAVED_CHARS) + "\n\n[… cut when saved]" } : m,
  );
  return { ...chat, messages };
}

/** Save; past the storage quota the oldest conversations go first. */
export function saveChats(state) {
  let chats = state.chats.slice(0, MAX_CHATS).map(trimmed);
  for (;;) {
    try {
      localStorage.setItem(KEY, JSON.stringify({ current: state.current, chats }));
      return true;
    } catch {
      if (chats.length <= 1) return false;
      chats = chats.slice(0, -1);
    }
  }
}
