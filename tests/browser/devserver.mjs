// A development server for the dashboard: serves web/ from disk (so a JS or
// CSS edit needs no cargo build) and passes everything else, WebSocket
// upgrades included, to a running daemon. Same origin for the browser, so the
// daemon's Origin and Host rules hold as they do in production.
//
//   node tests/browser/devserver.mjs <daemon port> [listen port]
// The browser test uses it when DOCKWIRE_WEB_DEV=1 (to try web/ edits against
// an older binary); CI never does.

import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "web");
const TYPES = { ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8" };
const CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'";

export function startDevServer(target, port = 0) {
  const server = http.createServer(async (req, res) => {
    const path = req.url.split("?")[0];
    let file = null;
    if (path === "/" || path === "/index.html") file = "index.html";
    else if (path.startsWith("/assets/")) file = normalize(path.slice("/assets/".length).split("/").slice(1).join("/"));
    if (file && !file.startsWith("..")) {
      try {
        let body = await readFile(join(WEB, file));
        if (file === "index.html") body = Buffer.from(body.toString().replaceAll("@BUILD@", "dev"));
        res.writeHead(200, { "Content-Type": TYPES[extname(file)] || "application/octet-stream", "Cache-Control": "no-store", "Content-Security-Policy": CSP });
        res.end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    const up = http.request({ host: "127.0.0.1", port: target, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.writeHead(502).end());
    req.pipe(up);
  });
  server.on("upgrade", (req, socket, head) => {
    const up = net.connect(target, "127.0.0.1", () => {
      let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${text}\r\n`);
      up.write(head);
      up.pipe(socket).pipe(up);
    });
    up.on("error", () => socket.destroy());
    socket.on("error", () => up.destroy());
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve({ port: server.address().port, close: () => server.close() })));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await startDevServer(Number(process.argv[2]), Number(process.argv[3] || 0));
  console.log(`dashboard (from web/) on http://127.0.0.1:${s.port}/ -> daemon 127.0.0.1:${process.argv[2]}`);
}
