// corral's chat page: the tabs, and the two views wired together. It talks
// only to the gateway that served it (see api.js); no framework, no build.

import { whenKeyNeeded } from "./api.js";
import { ChatView } from "./chat.js";
import { ModelsView } from "./models.js";

// A gateway with CORRAL_API_KEY: ask for the key once, in a modal dialog.
const keyDialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
whenKeyNeeded(
  (wrong) =>
    new Promise((resolve) => {
      document.getElementById("key-why").textContent = wrong
        ? "That key was refused; check CORRAL_API_KEY and try again."
        : "This corral needs its API key (CORRAL_API_KEY).";
      keyInput.value = "";
      keyDialog.addEventListener("close", () => resolve(keyDialog.returnValue === "ok" ? keyInput.value.trim() || null : null), { once: true });
      keyDialog.returnValue = "";
      keyDialog.showModal();
    }),
);

const chat = new ChatView();
const tabs = [...document.querySelectorAll('[role="tab"]')];

function showTab(tab, focus = false) {
  for (const t of tabs) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  models.setVisible(tab.id === "tab-models");
  history.replaceState(null, "", tab.id === "tab-models" ? "#models" : "#chat");
}

const models = new ModelsView({
  onChat(name) {
    showTab(tabs[0]);
    chat.chatWith(name);
  },
  onModels(names) {
    chat.setModels(names);
  },
});

for (const [i, tab] of tabs.entries()) {
  tab.addEventListener("click", () => showTab(tab));
  // The tab pattern: arrows move between tabs, Tab moves into the panel.
  tab.addEventListener("keydown", (event) => {
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    showTab(tabs[(next + tabs.length) % tabs.length], true);
  });
}

showTab(location.hash === "#models" ? tabs[1] : tabs[0]);
if (location.hash !== "#models") models.refresh(); // the model picker needs the list
