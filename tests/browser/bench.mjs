#!/usr/bin/env node
// Dashboard measurements (never asserts on timing; scripts/bench-dashboard.sh
// runs it and docs/performance.md keeps the numbers). It compares, in one run
// and one browser:
//
// 1. First load of GET / with an empty cache: bytes on the wire (gzip, headers
//    included; Chromium's encodedDataLength), request count, and the time from
//    navigation start to the first row of the containers table. Then a reload
//    with a warm cache (ETag/immutable at work).
// 2. The log view holding 100,000 lines while 1,000 lines/s arrive, against
//    the naive page of tests/browser/fixtures/naive.html (one element appended
//    per line, the seed's approach), each for PHASE_MS following the end and
//    PHASE_MS scrolling up a row-height every frame: main-thread busy time per
//    second (CDP Performance.getMetrics TaskDuration), frame times
//    (requestAnimationFrame deltas: p50, p95, max, share over 50 ms) and long
//    tasks (PerformanceObserver "longtask").
//
// Lines are injected through each page's own store in the page
// (`window.__dockwire.inject`, the same code path a log_update takes after
// parsing; the naive page's `inject`), 50 lines every 50 ms, so both pages get
// exactly the same load and the daemon and Docker are not what is measured.
//
// Usage: node bench.mjs <dashboard url>   (env CHROMIUM, BENCH_PHASE_MS)
// Prints a JSON object with every number.

import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import puppeteer from "puppeteer-core";

const url = process.argv[2];
if (!url) {
  console.error("usage: node bench.mjs <dashboard url>");
  process.exit(2);
}
const HERE = dirname(fileURLToPath(import.meta.url));
const PHASE_MS = Number(process.env.BENCH_PHASE_MS || 5000);
const HELD = 100000;
const BATCH = 50;
const EVERY_MS = 50;

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  defaultViewport: { width: 1400, height: 900 },
});
const out = {};

async function firstLoad() {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: false });
  const bytes = new Map();
  cdp.on("Network.loadingFinished", (e) => bytes.set(e.requestId, e.encodedDataLength));
  cdp.on("Network.loadingFailed", (e) => bytes.set(e.requestId, 0));
  const urls = new Map();
  cdp.on("Network.requestWillBeSent", (e) => urls.set(e.requestId, e.request.url));
  await page.evaluateOnNewDocument(() => {
    new MutationObserver((_, obs) => {
      if (document.querySelector("#containers-table tbody tr[data-id]")) {
        window.__firstList = performance.now();
        obs.disconnect();
      }
    }).observe(document, { childList: true, subtree: true });
  });
  await page.goto(`${url}/#/containers`, { waitUntil: "load" });
  await page.waitForFunction(() => window.__firstList !== undefined, { timeout: 15000 }).catch(() => {});
  const firstList = await page.evaluate(() => window.__firstList ?? null);
  await new Promise((r) => setTimeout(r, 1000)); // late requests (history, alerts) counted too
  const httpBytes = [...bytes.entries()].filter(([id]) => urls.get(id)?.startsWith("http")).reduce((n, [, b]) => n + b, 0);
  const requests = [...urls.values()].filter((u) => u.startsWith("http")).length;
  const domContentLoaded = await page.evaluate(() => performance.getEntriesByType("navigation")[0]?.domContentLoadedEventEnd ?? null);
  // Warm reload: what a returning visitor transfers.
  bytes.clear();
  urls.clear();
  await page.reload({ waitUntil: "load" });
  await new Promise((r) => setTimeout(r, 1000));
  const warm = [...bytes.entries()].filter(([id]) => urls.get(id)?.startsWith("http")).reduce((n, [, b]) => n + b, 0);
  await ctx.close();
  return {
    transfer_bytes: httpBytes,
    requests,
    dom_content_loaded_ms: Math.round(domContentLoaded),
    first_containers_list_ms: firstList === null ? null : Math.round(firstList),
    warm_reload_transfer_bytes: warm,
  };
}

/** Runs in the page: feeds lines, records frames and long tasks for `ms`. */
async function measure(page, cdp, { scroll }) {
  const before = await cdp.send("Performance.getMetrics");
  const t0 = Date.now();
  const r = await page.evaluate(
    (ms, batch, every, scroll) =>
      new Promise((resolve) => {
        const frames = [];
        const longs = [];
        let obs = null;
        try {
          obs = new PerformanceObserver((l) => longs.push(...l.getEntries().map((e) => e.duration)));
          obs.observe({ type: "longtask" });
        } catch {
          obs = null;
        }
        const box = window.__benchScrollBox();
        let n = 0;
        const feed = setInterval(() => {
          window.__benchInject(n, batch);
          n += batch;
        }, every);
        let last = performance.now();
        const end = last + ms;
        const frame = (t) => {
          frames.push(t - last);
          last = t;
          if (scroll) {
            box.scrollTop = box.scrollTop > 40 ? box.scrollTop - 36 : box.scrollHeight;
          }
          if (t < end) requestAnimationFrame(frame);
          else {
            clearInterval(feed);
            if (obs) obs.disconnect();
            resolve({ frames, longs, lines: n });
          }
        };
        requestAnimationFrame(frame);
      }),
    PHASE_MS,
    BATCH,
    EVERY_MS,
    scroll,
  );
  const after = await cdp.send("Performance.getMetrics");
  const wall = (Date.now() - t0) / 1000;
  const metric = (m, k) => m.metrics.find((x) => x.name === k)?.value ?? 0;
  const busy = metric(after, "TaskDuration") - metric(before, "TaskDuration");
  const f = r.frames.slice(1).sort((a, b) => a - b);
  const q = (p) => (f.length ? f[Math.min(f.length - 1, Math.floor(p * f.length))] : null);
  return {
    lines_per_s: Math.round(r.lines / wall),
    busy_ms_per_s: Math.round((busy * 1000) / wall),
    frames: f.length,
    frame_p50_ms: +q(0.5).toFixed(1),
    frame_p95_ms: +q(0.95).toFixed(1),
    frame_max_ms: +f[f.length - 1].toFixed(1),
    frames_over_50ms_pct: +((100 * f.filter((x) => x > 50).length) / Math.max(1, f.length)).toFixed(1),
    long_tasks: r.longs.length,
    long_task_ms_per_s: Math.round(r.longs.reduce((a, b) => a + b, 0) / wall),
  };
}

async function logBench(kind) {
  const page = await browser.newPage();
  const cdp = await page.createCDPSession();
  await cdp.send("Performance.enable");
  if (kind === "dashboard") {
    await page.goto(`${url}/#/logs`, { waitUntil: "load" });
    await page.waitForSelector("#log-list");
    await page.evaluate(
      (held, src) => {
        const text = new Function("i", `return ${src}`);
        window.__dockwire.inject("bench", held, text);
        window.__benchInject = (n, k) => window.__dockwire.inject("live", k, (i) => text(n + i));
        window.__benchScrollBox = () => document.getElementById("log-list");
      },
      HELD,
      "`2025-01-04T09:12:44Z INFO request id=${i} path=/api/v1/items/${i % 977} status=200 duration_ms=${i % 113}`",
    );
  } else {
    await page.goto(pathToFileURL(join(HERE, "fixtures", "naive.html")).href);
    await page.evaluate(
      (held, src) => {
        const text = new Function("i", `return ${src}`);
        window.follow = false;
        const frag = document.createDocumentFragment();
        for (let i = 0; i < held; i++) {
          const d = document.createElement("div");
          d.textContent = `bench ${text(i)}`;
          frag.appendChild(d);
        }
        window.scrollBox.appendChild(frag);
        window.follow = true;
        window.scrollBox.scrollTop = window.scrollBox.scrollHeight;
        window.__benchInject = (n, k) => window.inject("live", k, (i) => text(n + i));
        window.__benchScrollBox = () => window.scrollBox;
      },
      HELD,
      "`2025-01-04T09:12:44Z INFO request id=${i} path=/api/v1/items/${i % 977} status=200 duration_ms=${i % 113}`",
    );
  }
  await new Promise((r) => setTimeout(r, 500));
  const held = await page.evaluate((k) => (k === "dashboard" ? window.__dockwire.logs.held() : window.scrollBox.childElementCount), kind);
  const follow = await measure(page, cdp, { scroll: false });
  // Scrolling: the dashboard pauses when the reader scrolls up; the naive page stops following.
  await page.evaluate((k) => {
    if (k === "naive") window.follow = false;
  }, kind);
  const scrolling = await measure(page, cdp, { scroll: true });
  const domNodes = await page.evaluate(() => document.getElementsByTagName("*").length);
  await page.close();
  return { held, dom_elements: domNodes, follow, scrolling };
}

try {
  out.first_load = await firstLoad();
  out.dashboard = await logBench("dashboard");
  out.naive = await logBench("naive");
  const ratio = (a, b) => (b ? +(a / b).toFixed(1) : null);
  out.ratio_naive_over_dashboard = {
    follow_busy: ratio(out.naive.follow.busy_ms_per_s, out.dashboard.follow.busy_ms_per_s),
    scrolling_busy: ratio(out.naive.scrolling.busy_ms_per_s, out.dashboard.scrolling.busy_ms_per_s),
    scrolling_frame_p95: ratio(out.naive.scrolling.frame_p95_ms, out.dashboard.scrolling.frame_p95_ms),
    // The naive page cannot keep up: how many more lines a second the dashboard absorbed.
    follow_lines_absorbed_dashboard_over_naive: ratio(out.dashboard.follow.lines_per_s, out.naive.follow.lines_per_s),
  };
  out.chromium = await browser.version();
  out.phase_ms = PHASE_MS;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out, null, 2));
