// ANSI SGR colour codes in log lines, parsed into styled segments. Only SGR
// (`ESC [ ... m`) is rendered; every other escape sequence and control
// character is dropped. The result is plain data; the log view turns it into
// text nodes and spans (never HTML).

const SGR = /\x1b\[([0-9;:]*)([@-~])/g;
// Other escapes (OSC ... BEL/ST, single-char ESC x) and C0 controls but tab.
const OTHER = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;
// The same without the global flag, for test() (which would keep lastIndex).
const HAS_OTHER = new RegExp(OTHER.source);

/** 256-colour palette entry as "rgb(r,g,b)" (16-231 cube, 232-255 grey). */
function color256(n) {
  if (n < 16) return null;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const f = (x) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${f(Math.floor(i / 36))},${f(Math.floor(i / 6) % 6)},${f(i % 6)})`;
}

function fresh() {
  return { fg: null, bg: null, fgRgb: null, bgRgb: null, bold: false, dim: false, italic: false, underline: false };
}

function apply(st, params) {
  const p = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === 0) Object.assign(st, fresh());
    else if (c === 1) st.bold = true;
    else if (c === 2) st.dim = true;
    else if (c === 3) st.italic = true;
    else if (c === 4) st.underline = true;
    else if (c === 22) st.bold = st.dim = false;
    else if (c === 23) st.italic = false;
    else if (c === 24) st.underline = false;
    else if (c >= 30 && c <= 37) (st.fg = c - 30), (st.fgRgb = null);
    else if (c >= 90 && c <= 97) (st.fg = c - 90 + 8), (st.fgRgb = null);
    else if (c === 39) st.fg = st.fgRgb = null;
    else if (c >= 40 && c <= 47) (st.bg = c - 40), (st.bgRgb = null);
    else if (c >= 100 && c <= 107) (st.bg = c - 100 + 8), (st.bgRgb = null);
    else if (c === 49) st.bg = st.bgRgb = null;
    else if ((c === 38 || c === 48) && p[i + 1] === 5) {
      const n = p[i + 2] ?? 0;
      const rgb = color256(n);
      if (c === 38) (st.fg = rgb ? null : n), (st.fgRgb = rgb);
      else (st.bg = rgb ? null : n), (st.bgRgb = rgb);
      i += 2;
    } else if ((c === 38 || c === 48) && p[i + 1] === 2) {
      const rgb = `rgb(${p[i + 2] & 255},${p[i + 3] & 255},${p[i + 4] & 255})`;
      if (c === 38) (st.fg = null), (st.fgRgb = rgb);
      else (st.bg = null), (st.bgRgb = rgb);
      i += 4;
    }
  }
}

function plain(st) {
  return st.fg === null && st.bg === null && !st.fgRgb && !st.bgRgb && !st.bold && !st.dim && !st.italic && !st.underline;
}

/**
 * Splits `line` into `[{text, style}]`, `style` null for unstyled text.
 * Fast path: a line without ESC is one unstyled segment.
 */
export function parseAnsi(line) {
  if (line.indexOf("\x1b") < 0) {
    return [{ text: HAS_OTHER.test(line) ? line.replace(OTHER, "") : line, style: null }];
  }
  const out = [];
  const st = fresh();
  let last = 0;
  SGR.lastIndex = 0;
  let m;
  while ((m = SGR.exec(line)) !== null) {
    if (m.index > last) push(out, line.slice(last, m.index), st);
    if (m[2] === "m") apply(st, m[1]);
    last = SGR.lastIndex;
  }
  if (last < line.length) push(out, line.slice(last), st);
  return out;
}

function push(out, text, st) {
  text = text.replace(OTHER, "");
  if (text) out.push({ text, style: plain(st) ? null : { ...st } });
}

/** Removes every escape sequence (for filtering, search and download). */
export function stripAnsi(line) {
  return line.indexOf("\x1b") < 0 ? line : line.replace(SGR, "").replace(OTHER, "");
}

/** Appends the segments of `line` to `el` as text nodes and spans. */
export function renderAnsi(el, line) {
  for (const seg of parseAnsi(line)) {
    if (!seg.style) {
      el.appendChild(document.createTextNode(seg.text));
      continue;
    }
    const s = seg.style;
    const span = document.createElement("span");
    const cls = [];
    if (s.fg !== null) cls.push(`f${s.fg}`);
    if (s.bg !== null) cls.push(`g${s.bg}`);
    if (s.bold) cls.push("ab");
    if (s.dim) cls.push("ad");
    if (s.italic) cls.push("ai");
    if (s.underline) cls.push("au");
    if (cls.length) span.className = cls.join(" ");
    // CSSOM, not a style attribute: allowed under style-src 'self'.
    if (s.fgRgb) span.style.color = s.fgRgb;
    if (s.bgRgb) span.style.backgroundColor = s.bgRgb;
    span.textContent = seg.text;
    el.appendChild(span);
  }
}
