// Number, size, time and duration formatting for every view.

export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${n < 0 ? "-" : ""}${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function rate(n) {
  return n === null || n === undefined ? "—" : `${bytes(n)}/s`;
}

export function pct(n) {
  return n === null || n === undefined || !Number.isFinite(n) ? "—" : `${n.toFixed(n >= 10 ? 0 : 1)}%`;
}

/** "3d 4h", "5m 2s" from milliseconds. */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** "12 s ago" relative to now, from an RFC 3339 string or epoch ms. */
export function ago(t) {
  const ms = typeof t === "number" ? t : Date.parse(t);
  if (!Number.isFinite(ms)) return "—";
  return `${duration(Math.max(0, Date.now() - ms))} ago`;
}

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

/** HH:MM:SS.mmm local time, for log lines. */
export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** HH:MM local time, for chart axes. */
export function hm(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** HH:MM:SS local time, for short chart spans. */
export function hms(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Short id: the first 12 hex digits. */
export function shortId(id) {
  return typeof id === "string" ? id.slice(0, 12) : "";
}
