// The log view's store: a ring buffer of the last `capacity` lines of every
// followed container, merged in arrival order, plus the filtered view of it.
//
// Invariants:
// - A line has an absolute number (`abs`, counting from 0 since the page
//   loaded); it lives in slot abs % capacity while abs >= total - capacity.
//   Memory is fixed: typed arrays for the numbers, one array of strings.
// - The view is the increasing list of the abs numbers that pass the filter,
//   itself a ring of at most `capacity` entries; lines that leave the store
//   leave the view. A new line costs O(1) (plus one filter test); a filter
//   change rescans what is held.
// - `version` changes whenever the view does; the list redraws only then.

import { stripAnsi } from "./ansi.js";

export const STREAM_UNKNOWN = 0;
export const STREAM_STDOUT = 1;
export const STREAM_STDERR = 2;
/** A line the page wrote itself (stream stopped, lines dropped, gap). */
export const STREAM_SYSTEM = 3;

export class LogStore {
  constructor(capacity = 100000) {
    this.capacity = capacity;
    this.text = new Array(capacity);
    this.src = new Uint16Array(capacity);
    this.time = new Float64Array(capacity);
    this.stream = new Uint8Array(capacity);
    this.total = 0;
    /** Sources: {key, serverId, containerId, name, color, visible}. */
    this.sources = [];
    this.byKey = new Map();
    this.view = new Float64Array(capacity);
    this.viewStart = 0;
    this.viewLen = 0;
    this.filter = { text: "", regex: false, stream: 0, re: null, error: null };
    this.version = 0;
    /** Changes only when abs numbers are reused (clear): rows redraw then. */
    this.epoch = 0;
    /** Lines added since `markSeen` (the "N new lines" of a paused view). */
    this.unseen = 0;
  }

  /** The first abs number still held. */
  first() {
    return Math.max(0, this.total - this.capacity);
  }

  held() {
    return this.total - this.first();
  }

  /** The source index for `key`, created on first use. */
  source(key, info = {}) {
    let i = this.byKey.get(key);
    if (i === undefined) {
      i = this.sources.length;
      this.sources.push({ key, visible: true, color: i % 8, ...info });
      this.byKey.set(key, i);
    } else {
      Object.assign(this.sources[i], info);
    }
    return i;
  }

  /** Appends one line; `t` epoch ms. */
  push(src, line, t, stream = STREAM_UNKNOWN) {
    const abs = this.total++;
    const slot = abs % this.capacity;
    this.text[slot] = line;
    this.src[slot] = src;
    this.time[slot] = t;
    this.stream[slot] = stream;
    this.unseen++;
    if (this.matches(slot)) this.viewPush(abs);
    if (this.viewLen && this.view[this.viewStart] < this.first()) this.viewTrim();
    this.version++;
  }

  /** Appends the lines of a `log_update` text ("a\nb\n"). */
  pushText(src, text, t, stream = STREAM_UNKNOWN) {
    let start = 0;
    const n = text.length;
    while (start < n) {
      let end = text.indexOf("\n", start);
      if (end < 0) end = n;
      let line = text.slice(start, end);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      this.push(src, line, t, stream);
      start = end + 1;
    }
  }

  viewPush(abs) {
    const cap = this.capacity;
    if (this.viewLen === cap) {
      this.viewStart = (this.viewStart + 1) % cap;
      this.viewLen--;
    }
    this.view[(this.viewStart + this.viewLen) % cap] = abs;
    this.viewLen++;
  }

  viewTrim() {
    const first = this.first();
    const cap = this.capacity;
    while (this.viewLen && this.view[this.viewStart] < first) {
      this.viewStart = (this.viewStart + 1) % cap;
      this.viewLen--;
    }
  }

  /** The abs number of the i-th line of the view. */
  viewAt(i) {
    return this.view[(this.viewStart + i) % this.capacity];
  }

  /** The view index of the first line with abs >= `abs` (binary search). */
  viewIndexOf(abs) {
    let lo = 0;
    let hi = this.viewLen;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.viewAt(mid) < abs) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  line(abs) {
    const slot = abs % this.capacity;
    return {
      abs,
      text: this.text[slot],
      src: this.sources[this.src[slot]],
      time: this.time[slot],
      stream: this.stream[slot],
    };
  }

  matches(slot) {
    const f = this.filter;
    const s = this.sources[this.src[slot]];
    if (s && !s.visible) return false;
    const st = this.stream[slot];
    if (f.stream && st !== STREAM_SYSTEM && st !== f.stream) return false;
    if (!f.text) return true;
    const text = stripAnsi(this.text[slot]);
    if (f.re) return f.re.test(text);
    return f.lower ? text.toLowerCase().includes(f.lower) : true;
  }

  /**
   * Sets the filter and rebuilds the view. `regex`: `text` is a regular
   * expression (a bad one sets `filter.error` and matches everything).
   */
  setFilter({ text = this.filter.text, regex = this.filter.regex, stream = this.filter.stream } = {}) {
    const f = { text, regex, stream, re: null, lower: null, error: null };
    if (text && regex) {
      try {
        f.re = new RegExp(text, "i");
      } catch (e) {
        f.error = e.message;
        f.text = "";
      }
    } else if (text) {
      f.lower = text.toLowerCase();
    }
    this.filter = f;
    this.rebuild();
  }

  rebuild() {
    this.viewStart = 0;
    this.viewLen = 0;
    for (let abs = this.first(); abs < this.total; abs++) {
      if (this.matches(abs % this.capacity)) this.viewPush(abs);
    }
    this.version++;
  }

  setVisible(key, visible) {
    const i = this.byKey.get(key);
    if (i === undefined) return;
    this.sources[i].visible = visible;
    this.rebuild();
  }

  markSeen() {
    this.unseen = 0;
  }

  /** Every line of the view as text, for the download button. */
  *viewLines() {
    for (let i = 0; i < this.viewLen; i++) yield this.line(this.viewAt(i));
  }

  clear() {
    this.total = 0;
    this.viewStart = 0;
    this.viewLen = 0;
    this.text = new Array(this.capacity);
    this.unseen = 0;
    this.epoch++;
    this.version++;
  }
}
