// Comparison peer for `dockwire-loadtest fanout --peer socketio`: the relay
// contract of ../README.md on Node's socket.io 4.x, as a user would write it.
//
// A client emits `publish` with an object; the server emits `message` with the
// same object to every other connected client (socket.broadcast.emit, which
// encodes the packet once for all receivers). WebSocket transport only, no
// per-message compression. Usage: node server.js [PORT] [HOST] (loopback only).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || process.env.PORT || 9002);
const host = process.argv[3] || "127.0.0.1";
if (!/^127\.|^::1$|^localhost$/.test(host)) {
  console.error(`refusing to listen on non-loopback ${host}`);
  process.exit(2);
}

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("publish", (data) => {
    socket.broadcast.emit("message", data);
  });
});

httpServer.listen({ port, host, backlog: 4096 }, () => {
  console.error(`node socket.io relay listening on ${host}:${port}`);
});

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
