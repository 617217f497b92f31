// DOM building without HTML strings: every server-provided string goes in
// through textContent (a text node), never innerHTML, so nothing a container
// prints or an agent names can become markup.

/**
 * h("div", {class: "x", onclick: fn, title: "t"}, "text", childNode, ...)
 * Attributes: `class`, `text` (textContent), `on<event>` (listeners),
 * `dataset` (object), anything else through setAttribute. Children: strings
 * and numbers become text nodes; null/false are skipped; arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "value") el.value = v;
      else if (k === "checked" || k === "disabled" || k === "selected") el[k] = Boolean(v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Removes every child of `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replaces the children of `el` with `children`. */
export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** A small transient message in the corner (errors nobody else shows). */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(box);
  }
  const t = h("div", { class: `toast ${kind}` }, text);
  box.appendChild(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
  while (box.children.length > 5) box.firstChild.remove();
}

/** Removes every toast (a logout: the next user does not see them). */
export function clearToasts() {
  document.getElementById("toasts")?.replaceChildren();
}
