// Building the page's DOM. Strings passed as children become text nodes:
// nothing here ever parses HTML.

export const byId = (id) => document.getElementById(id);

export function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children);
  return node;
}
