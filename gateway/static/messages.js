// One message of a conversation as DOM: the user's text as typed, an answer
// as Markdown (built from text nodes, see markdown.js) with its figures
// under it, an error with its title.

import { el } from "./dom.js";
import { formatStats } from "./format.js";
import { renderMarkdown } from "./markdown.js";

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

export function fillBody(body, message) {
  if (message.role === "user") body.textContent = message.content;
  else body.replaceChildren(renderMarkdown(message.content, copy));
}

export function messageNode(message) {
  if (message.role === "error") {
    const node = el("article", "msg error", el("strong", null, message.title || "Error"), " ", el("span", "body", message.content));
    node.setAttribute("role", "alert");
    return node;
  }
  const body = el("div", "body");
  const node = el("article", `msg ${message.role}`, el("div", "who", message.role === "user" ? "You" : "Answer"), body);
  fillBody(body, message);
  if (message.role === "assistant") node.append(el("div", "stats", formatStats(message.stats)));
  return node;
}
