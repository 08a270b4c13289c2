// The Models tab: every model the gateway can run (catalog and store), with
// its state, memory against its estimate, context length and when it
// unloads; buttons to load, unload and chat. It polls while a model loads.
// Rows are updated in place, so a refresh never takes the keyboard focus.

import { listModels, listRunning, loadModel, unloadModel } from "./api.js";
import { describeError, formatBytes, formatDuration, formatUnload } from "./format.js";
import { byId, el } from "./dom.js";

const FAST_MS = 500; // while a model loads
const TICK_MS = 1000; // the countdowns
const FETCH_MS = 2000; // otherwise, while the tab is shown

/** `ai/smollm2:latest` and `ai/smollm2` are one model. */
export const canonical = (name) => (name.endsWith(":latest") ? name.slice(0, -":latest".length) : name);

function button(label, name, onClick) {
  const node = el("button", null, label);
  node.type = "button";
  node.setAttribute("aria-label", `${label} ${name}`);
  // aria-disabled rather than disabled: a disabled button loses the focus
  node.addEventListener("click", () => node.getAttribute("aria-disabled") !== "true" && onClick());
  return node;
}

/** What one model's workers (``/engines/ps`` rows) add up to. */
export function modelState(rows, pending) {
  if (!rows.length) return pending ? "loading" : "not loaded";
  if (pending || rows.some((r) => r.loading)) return "loading";
  if (rows.some((r) => r.in_use)) return "busy";
  if (rows.some((r) => r.state === "stopping")) return "stopping";
  return "ready";
}

function unloads(rows) {
  if (!rows.length) return "—";
  const keep = rows[0].keep_alive_s;
  if (keep === null || keep === undefined || keep < 0) return "never";
  const expiries = rows.map((r) => r.expires_at).filter((t) => typeof t === "number");
  if (expiries.length) return formatUnload(Math.min(...expiries));
  return `${formatDuration(keep)} after its last answer`;
}

function memory(rows, config) {
  if (!rows.length) return config.estimate_bytes ? `estimate ${formatBytes(config.estimate_bytes)}` : "—";
  const rss = rows.reduce((sum, r) => sum + (r.rss_bytes || 0), 0);
  const estimate = rows.reduce((sum, r) => sum + (r.estimate_bytes || 0), 0);
  return estimate ? `${formatBytes(rss)} · estimate ${formatBytes(estimate)}` : formatBytes(rss);
}

export class ModelsView {
  constructor({ onChat, onModels }) {
    this.onChat = onChat;
    this.onModels = onModels;
    this.list = byId("model-list");
    this.status = byId("models-status");
    this.rows = new Map(); // name -> {node, fields}
    this.pending = new Set(); // loads in flight
    this.errors = new Map(); // name -> {title, text}
    this.entries = []; // {name, config, runnable}
    this.running = [];
    this.visible = false;
    this.timer = null;
    this.lastFetch = 0;
    this.inFlight = null;
    byId("refresh").addEventListener("click", () => this.refresh());
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible) this.refresh();
    else this.schedule();
  }

  loading() {
    return this.pending.size > 0 || this.running.some((r) => r.loading);
  }

  /**
   * Fetch the lists and show them. After an action (`fresh`), a fetch begun
   * before it may hold rows from before it took effect: wait it out and
   * fetch anew, else a row flashed its old state ("not loaded" between
   * "loading" and "ready"). `then` runs once the new rows are in, before
   * they are shown.
   */
  async refresh({ fresh = false, then = null } = {}) {
    if (this.inFlight && !fresh) return this.inFlight;
    while (this.inFlight) await this.inFlight;
    this.inFlight = this.fetch();
    try {
      await this.inFlight;
    } finally {
      this.inFlight = null;
      if (then) then();
    }
    this.render();
    this.schedule();
  }

  async fetch() {
    try {
      const [models, running] = await Promise.all([listModels(), listRunning()]);
      this.running = Array.isArray(running) ? running : [];
      this.entries = (Array.isArray(models) ? models : []).map((m) => ({ name: canonical((m.tags && m.tags[0]) || m.id), config: m.config || {}, runnable: true }));
      this.onModels(this.entries.map((e) => e.name));
      // A model loaded from a file path by the CLI runs too, but HTTP cannot name it.
      for (const r of this.running) {
        const name = canonical(r.model_name || r.model || "");
        if (name && !this.entries.some((e) => e.name === name)) this.entries.push({ name, config: {}, runnable: false });
      }
      this.status.textContent = "";
    } catch (exc) {
      const { title, text } = describeError(exc);
      this.status.textContent = `${title}: ${text}`;
    }
    this.lastFetch = Date.now();
  }

  schedule() {
    clearTimeout(this.timer);
    const loading = this.loading();
    if (!this.visible && !loading) return;
    this.timer = setTimeout(() => {
      if (this.loading() || Date.now() - this.lastFetch >= FETCH_MS) this.refresh();
      else {
        this.render();
        this.schedule();
      }
    }, loading ? FAST_MS : TICK_MS);
  }

  async load(name) {
    this.pending.add(name);
    this.errors.delete(name);
    this.render();
    this.schedule();
    try {
      await loadModel(name);
    } catch (exc) {
      this.errors.set(name, describeError(exc));
    }
    // The row says "loading" until the rows fetched after the load are in.
    await this.refresh({ fresh: true, then: () => this.pending.delete(name) });
  }

  async unload(name) {
    this.errors.delete(name);
    try {
      await unloadModel(name);
    } catch (exc) {
      this.errors.set(name, describeError(exc));
    }
    await this.refresh({ fresh: true });
  }

  row(name) {
    let row = this.rows.get(name);
    if (row) return row;
    const fields = {};
    const fact = (key, label) => el("div", null, el("dt", null, label), (fields[key] = el("dd", key)));
    fields.state = el("span", "state");
    fields.error = el("p", "row-error");
    fields.error.setAttribute("role", "alert");
    fields.error.hidden = true;
    fields.load = button("Load", name, () => this.load(name));
    fields.unload = button("Unload", name, () => this.unload(name));
    fields.chat = button("Chat", name, () => this.onChat(name));
    const node = el(
      "li",
      "model",
      el("div", "model-head", el("h3", null, name), fields.state),
      el("dl", "facts", fact("memory", "Memory"), fact("context", "Context"), fact("unloads", "Unloads"), fact("size", "Size"), fact("details", "Model")),
      fields.error,
      el("div", "actions", fields.load, fields.unload, fields.chat),
    );
    node.dataset.model = name;
    row = { node, fields };
    this.rows.set(name, row);
    return row;
  }

  render() {
    const names = this.entries.map((e) => e.name);
    const nodes = this.entries.map(({ name, config, runnable }) => {
      const rows = this.running.filter((r) => canonical(r.model_name || r.model || "") === name);
      const state = modelState(rows, this.pending.has(name));
      const { fields, node } = this.row(name);
      fields.state.textContent = state;
      fields.state.className = `state state-${state.replace(" ", "-")}`;
      fields.memory.textContent = memory(rows, config);
      fields.context.textContent = `${(rows[0] && rows[0].context_length) || config.context_size || "?"} tokens`;
      fields.unloads.textContent = unloads(rows);
      fields.size.textContent = config.size || "—";
      fields.details.textContent = [config.parameters, config.quantization, config.architecture].filter(Boolean).join(" · ") || "—";
      fields.load.setAttribute("aria-disabled", String(state !== "not loaded"));
      fields.unload.setAttribute("aria-disabled", String(!rows.length));
      fields.load.hidden = fields.chat.hidden = !runnable;
      const error = this.errors.get(name);
      fields.error.hidden = !error;
      fields.error.textContent = error ? `${error.title}: ${error.text}` : "";
      return node;
    });
    for (const name of this.rows.keys()) if (!names.includes(name)) this.rows.delete(name);
    // Move only what changed place: re-inserting a focused node blurs it.
    nodes.forEach((node, i) => {
      if (this.list.children[i] !== node) this.list.insertBefore(node, this.list.children[i] || null);
    });
    while (this.list.children.length > nodes.length) this.list.lastElementChild.remove();
    if (!nodes.length && !this.status.textContent) this.status.textContent = "No models: corral list shows none either; pull one with corral pull.";
  }
}
