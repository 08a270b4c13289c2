// A small Markdown subset for model answers: paragraphs, headings, lists,
// quotes, rules, fenced code blocks (with a copy button), inline code, bold
// and italics. Model output is untrusted: every piece of it reaches the page
// through document.createTextNode, never as HTML, so `<img onerror=…>` or
// `<script>` in an answer is shown as the text it is. Links stay text too.

import { el } from "./dom.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;

/** A DocumentFragment for `text`; `copy(text)` backs the copy buttons. */
export function renderMarkdown(text, copy) {
  const fragment = document.createDocumentFragment();
  fragment.append(...blocks(text.replace(/\r\n?/g, "\n").split("\n"), copy));
  return fragment;
}

function blocks(lines, copy) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (line.trim() === "") {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const close = new RegExp(`^ {0,3}${m[1][0]}{${m[1].length},}\\s*$`);
      const body = [];
      i += 1;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence (an answer still streaming may have none yet)
      out.push(codeBlock(body.join("\n"), m[2], copy));
    } else if ((m = HEADING.exec(line))) {
      out.push(el(`h${Math.min(m[1].length + 2, 6)}`, null, ...inline(m[2])));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        quoted.push(m[1]);
        i += 1;
      }
      out.push(el("blockquote", null, ...blocks(quoted, copy)));
    } else if (ITEM.test(line)) {
      const start = i;
      while (i < lines.length && (ITEM.test(lines[i]) || (lines[i].trim() !== "" && /^\s/.test(lines[i])))) i += 1;
      out.push(list(lines.slice(start, i)));
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i])) para.push(lines[i++]);
      out.push(el("p", null, ...inline(para.join("\n"))));
    }
  }
  return out;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

/** List lines (items and their continuations); deeper items nest. */
function list(lines) {
  const first = ITEM.exec(lines[0]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let item = null;
  let nested = [];
  const flush = () => {
    if (item && nested.length) item.append(list(nested));
    nested = [];
  };
  for (const line of lines) {
    const m = ITEM.exec(line);
    if (m && m[1].length <= indent) {
      flush();
      item = el("li", null, ...inline(m[3]));
      node.append(item);
    } else if (m || nested.length) {
      nested.push(line);
    } else {
      item.append("\n", ...inline(line.trim()));
    }
  }
  flush();
  return node;
}

function codeBlock(code, lang, copy) {
  const button = el("button", "copy", "Copy");
  button.type = "button";
  button.setAttribute("aria-label", "Copy the code");
  button.addEventListener("click", () => copy(code, button));
  const bar = el("div", "code-bar", el("span", "lang", lang), button);
  return el("div", "code", bar, el("pre", null, el("code", null, code)));
}

// Inline spans: `code` first (nothing inside it is markup), then **bold**
// and *italic*. Underscores stay as typed: answers name snake_case things.
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([^*]*?[^\s*])\*/;

function inline(text) {
  const out = [];
  let rest = text;
  let m;
  while (rest && (m = INLINE.exec(rest))) {
    if (m.index > 0) out.push(rest.slice(0, m.index));
    if (m[1]) out.push(el("code", null, m[2]));
    else if (m[3] !== undefined) out.push(el("strong", null, ...inline(m[3])));
    else out.push(el("em", null, m[4]));
    rest = rest.slice(m.index + m[0].length);
  }
  if (rest) out.push(rest);
  return out; // strings become text nodes when appended
}
