// A small time-series line chart on a canvas: sharp at any devicePixelRatio,
// y axis with 4 labelled ticks, x axis with clock labels, one or more series.
// Drawing is O(points) with points past the canvas width thinned per pixel.

import { hm, hms } from "./format.js";

const PAD = { l: 58, r: 10, t: 18, b: 22 };

export class Chart {
  /** opts: {title, fmt(v) -> label, max (fixed y max, e.g. 100), series: [{name, color}]} */
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.opts = opts;
    this.data = opts.series.map(() => []);
    this.range = null;
  }

  /** data: one array of [t, v] per series; range: [tMin, tMax] epoch ms. */
  set(data, range) {
    this.data = data;
    this.range = range;
    this.draw();
  }

  /** How many points are drawn (the tests count them). */
  points() {
    return this.data.reduce((n, s) => n + s.length, 0);
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(c);
    const fg = css.getPropertyValue("--chart-fg").trim() || "#aab";
    const grid = css.getPropertyValue("--chart-grid").trim() || "#333";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = fg;
    ctx.textBaseline = "top";
    ctx.fillText(this.opts.title, PAD.l, 2);
    // Legend, right-aligned.
    let lx = w - PAD.r;
    for (let i = this.opts.series.length - 1; i >= 0; i--) {
      const s = this.opts.series[i];
      const tw = ctx.measureText(s.name).width;
      lx -= tw;
      ctx.fillStyle = fg;
      ctx.fillText(s.name, lx, 2);
      lx -= 12;
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, 5, 8, 3);
      lx -= 10;
    }

    const [t0, t1] = this.range || this.extent();
    let vmax = this.opts.max ?? 0;
    if (this.opts.max === undefined) {
      for (const s of this.data) for (const [t, v] of s) if (t >= t0 && v !== null && v > vmax) vmax = v;
      vmax = niceCeil(vmax || 1);
    }
    const pw = w - PAD.l - PAD.r;
    const ph = h - PAD.t - PAD.b;
    const x = (t) => PAD.l + ((t - t0) / Math.max(1, t1 - t0)) * pw;
    const y = (v) => PAD.t + ph - (v / vmax) * ph;

    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = fg;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = 0; i <= 4; i++) {
      const v = (vmax * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(PAD.l, yy);
      ctx.lineTo(w - PAD.r, yy);
      ctx.stroke();
      ctx.fillText(this.opts.fmt(v), PAD.l - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const ticks = Math.max(2, Math.floor(pw / 90));
    const label = t1 - t0 < 15 * 60e3 ? hms : hm;
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      ctx.fillText(label(t), Math.min(w - PAD.r - 14, Math.max(PAD.l + 14, x(t))), h - PAD.b + 5);
    }
    ctx.textAlign = "left";

    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.l, PAD.t, pw, ph);
    ctx.clip();
    ctx.lineWidth = 1.5;
    this.data.forEach((pts, si) => {
      ctx.strokeStyle = this.opts.series[si].color;
      ctx.beginPath();
      let pen = false;
      let lastPx = -1;
      for (const [t, v] of pts) {
        if (t < t0) continue;
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        const px = x(t);
        // Thin to one point per half pixel: 86,400 points draw like 1,000.
        if (pen && px - lastPx < 0.5) continue;
        if (pen) ctx.lineTo(px, y(v));
        else ctx.moveTo(px, y(v));
        pen = true;
        lastPx = px;
      }
      ctx.stroke();
    });
    ctx.restore();
  }

  extent() {
    let a = Infinity;
    let b = -Infinity;
    for (const s of this.data) {
      if (s.length) {
        a = Math.min(a, s[0][0]);
        b = Math.max(b, s[s.length - 1][0]);
      }
    }
    if (!Number.isFinite(a)) return [Date.now() - 60000, Date.now()];
    return [a, Math.max(b, a + 1000)];
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
