// The chat: conversations (kept in localStorage), the model picker and
// options, sending with streamed answers, Stop, and errors shown inline.

import { streamChat } from "./api.js";
import { byId, el } from "./dom.js";
import { describeError } from "./format.js";
import { fillBody, messageNode } from "./messages.js";
import { loadChats, newChat, saveChats } from "./store.js";

function numberOrNull(value, parse) {
  const parsed = value.trim() === "" ? NaN : parse(value);
  return Number.isFinite(parsed) ? parsed : null;
}

export class ChatView {
  constructor() {
    this.dom = {};
    for (const id of ["chats", "chat-list", "new-chat", "toggle-chats", "model", "toggle-options", "options", "system", "temperature", "max-tokens", "messages", "composer", "input", "send", "stop"]) {
      this.dom[id] = byId(id);
    }
    this.state = loadChats();
    this.running = null; // {controller, chat, answer, node}
    this.renderTimer = null;
    this.renderCost = 0;
    this.models = [];
    if (!this.current()) this.start();
    this.wire();
    this.show();
    this.fitInput();
  }

  current() {
    return this.state.chats.find((c) => c.id === this.state.current);
  }

  save() {
    saveChats(this.state);
  }

  wire() {
    const d = this.dom;
    d.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    d.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.running) {
        event.preventDefault();
        this.stop();
      }
    });
    d.input.addEventListener("input", () => this.fitInput());
    d.stop.addEventListener("click", () => this.stop());
    d["new-chat"].addEventListener("click", () => {
      this.start();
      this.closeChats();
      d.input.focus();
    });
    d.model.addEventListener("change", () => this.setOption("model", d.model.value));
    d.system.addEventListener("input", () => this.setOption("system", d.system.value));
    d.temperature.addEventListener("input", () => this.setOption("temperature", d.temperature.value));
    d["max-tokens"].addEventListener("input", () => this.setOption("maxTokens", d["max-tokens"].value));
    this.toggle(d["toggle-options"], d.options);
    this.toggle(d["toggle-chats"], d.chats);
    window.addEventListener("pagehide", () => this.save());
  }

  /** A button that shows and hides a panel, saying so with aria-expanded. */
  toggle(button, panel) {
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      panel.classList.toggle("open", open);
    });
  }

  /** On a phone the list of chats folds away once one is picked. */
  closeChats() {
    this.dom["toggle-chats"].setAttribute("aria-expanded", "false");
    this.dom.chats.classList.remove("open");
  }

  setOption(field, value) {
    const chat = this.current();
    chat[field] = value;
    this.save();
  }

  /** A new, empty conversation with the current one's model and options. */
  start(model) {
    this.stop();
    const previous = this.current() || {};
    const chat = newChat({ ...previous, model: model || previous.model || this.models[0] || "" });
    const empty = this.state.chats.findIndex((c) => c.messages.length === 0);
    if (empty >= 0) this.state.chats.splice(empty, 1); // at most one blank chat in the list
    this.state.chats.unshift(chat);
    this.state.current = chat.id;
    this.save();
    this.show();
  }

  select(id) {
    if (id === this.state.current) return;
    this.stop();
    this.state.current = id;
    this.save();
    this.show();
  }

  remove(id) {
    if (this.running && this.running.chat.id === id) this.stop();
    this.state.chats = this.state.chats.filter((c) => c.id !== id);
    if (this.state.current === id) {
      this.state.current = this.state.chats[0] ? this.state.chats[0].id : null;
    }
    if (!this.current()) this.start();
    this.save();
    this.show();
  }

  /** The Models tab's Chat button. */
  chatWith(name) {
    const chat = this.current();
    if (chat.messages.length && chat.model !== name) this.start(name);
    else this.setOption("model", name);
    this.show();
    this.dom.input.focus();
  }

  setModels(names) {
    this.models = names;
    const chat = this.current();
    if (!chat.model && names.length) this.setOption("model", names[0]);
    this.showModel();
  }

  showModel() {
    const chat = this.current();
    const names = this.models.includes(chat.model) || !chat.model ? this.models : [chat.model, ...this.models];
    this.dom.model.replaceChildren(...names.map((name) => new Option(name, name)));
    this.dom.model.value = chat.model;
  }

  show() {
    const chat = this.current();
    const d = this.dom;
    this.showModel();
    d.system.value = chat.system;
    d.temperature.value = chat.temperature;
    d["max-tokens"].value = chat.maxTokens;
    this.showList();
    d.messages.replaceChildren(...chat.messages.map((m) => messageNode(m)));
    if (!chat.messages.length) d.messages.append(el("p", "hint", "Type a message below: Enter sends, Shift+Enter starts a new line."));
    d.messages.scrollTop = d.messages.scrollHeight;
    this.showRunning();
  }

  showList() {
    const items = this.state.chats.map((chat) => {
      const open = el("button", "open", chat.title || "New chat");
      open.type = "button";
      if (chat.id === this.state.current) open.setAttribute("aria-current", "true");
      open.addEventListener("click", () => {
        this.select(chat.id);
        this.closeChats();
      });
      const remove = el("button", "delete", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Delete the chat “${chat.title || "New chat"}”`);
      remove.addEventListener("click", () => this.remove(chat.id));
      return el("li", null, open, remove);
    });
    this.dom["chat-list"].replaceChildren(...items);
  }

  showRunning() {
    const running = Boolean(this.running);
    this.dom.send.hidden = running;
    this.dom.stop.hidden = !running;
    this.dom.messages.setAttribute("aria-busy", String(running));
  }

  nearBottom() {
    const m = this.dom.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
  }

  append(message) {
    const chat = this.current();
    if (!chat.messages.length) this.dom.messages.replaceChildren();
    chat.messages.push(message);
    const node = messageNode(message);
    this.dom.messages.append(node);
    this.dom.messages.scrollTop = this.dom.messages.scrollHeight;
    return node;
  }

  fitInput() {
    const input = this.dom.input;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
    input.style.overflowY = input.scrollHeight > 240 ? "auto" : "hidden";
  }

  /** The messages sent with a request: the system prompt, then the turns. */
  history(chat) {
    const messages = chat.system.trim() ? [{ role: "system", content: chat.system }] : [];
    for (const m of chat.messages) {
      if ((m.role === "user" || m.role === "assistant") && m.content) messages.push({ role: m.role, content: m.content });
    }
    return messages;
  }

  request(chat) {
    const body = { model: chat.model, messages: this.history(chat) };
    const temperature = numberOrNull(chat.temperature, parseFloat);
    const maxTokens = numberOrNull(chat.maxTokens, (v) => parseInt(v, 10));
    if (temperature !== null) body.temperature = temperature;
    if (maxTokens !== null) body.max_tokens = maxTokens;
    return body;
  }

  async send() {
    const text = this.dom.input.value;
    const chat = this.current();
    if (this.running || !text.trim()) return;
    if (!chat.model) {
      this.append({ role: "error", title: "No model", content: "Pick a model first (the Models tab lists them)." });
      return;
    }
    this.dom.input.value = "";
    this.fitInput();
    if (!chat.title) chat.title = text.trim().split("\n")[0].slice(0, 60);
    this.append({ role: "user", content: text });
    const body = this.request(chat);
    const answer = { role: "assistant", content: "", stats: null };
    const node = this.append(answer);
    const running = { controller: new AbortController(), chat, answer, node };
    this.running = running;
    chat.updated = Date.now();
    this.showList();
    this.showRunning();
    const started = performance.now();
    let first = null;
    let pieces = 0;
    let result = null;
    let error = null;
    try {
      result = await streamChat(body, running.controller.signal, (piece) => {
        if (first === null) first = performance.now();
        pieces += 1;
        answer.content += piece;
        this.scheduleRender(running);
      });
    } catch (exc) {
      if (exc.name !== "AbortError") error = exc;
    }
    const ended = performance.now();
    const usage = result && result.usage;
    const tokens = usage ? usage.completion_tokens : pieces;
    const finish = error ? "error" : result ? result.finishReason || "" : "stopped";
    answer.stats = {
      tokens,
      estimated: !usage,
      // the decode rate: tokens after the first, over the time after it
      tokensPerS: first !== null && tokens > 1 && ended > first ? ((tokens - 1) * 1000) / (ended - first) : null,
      ttftMs: first !== null ? first - started : null,
      finish,
    };
    this.finish(running, error);
  }

  finish(running, error) {
    clearTimeout(this.renderTimer);
    this.renderTimer = null;
    const { chat, answer, node } = running;
    if (this.running === running) this.running = null;
    if (error && !answer.content) chat.messages.splice(chat.messages.indexOf(answer), 1);
    if (error) {
      const { title, text } = describeError(error);
      chat.messages.push({ role: "error", title, content: text });
    }
    this.save();
    if (chat === this.current()) {
      const follow = this.nearBottom();
      if (chat.messages.includes(answer)) node.replaceWith(messageNode(answer));
      else node.remove();
      if (error) this.dom.messages.append(messageNode(chat.messages[chat.messages.length - 1]));
      if (follow) this.dom.messages.scrollTop = this.dom.messages.scrollHeight;
      this.showRunning();
    }
  }

  /** Re-render the streaming answer, no more often than it costs. */
  scheduleRender(running) {
    if (this.renderTimer !== null || running.chat !== this.current()) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = null;
      const follow = this.nearBottom();
      const began = performance.now();
      fillBody(running.node.querySelector(".body"), running.answer);
      this.renderCost = performance.now() - began;
      if (follow) this.dom.messages.scrollTop = this.dom.messages.scrollHeight;
    }, Math.max(30, 4 * this.renderCost));
  }

  /** Abort the answer being written: the gateway sees the connection
   * close and cancels it at the worker. */
  stop() {
    if (!this.running) return;
    const hadFocus = document.activeElement === this.dom.stop;
    this.running.controller.abort();
    this.running = null;
    this.showRunning();
    if (hadFocus) this.dom.input.focus(); // the Stop button hides: keep the keyboard somewhere useful
  }
}
