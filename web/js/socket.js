// The page's one WebSocket to /api/v1/ws: connect, reconnect with
// exponential backoff and full jitter, request ids, and the connection state
// every view shows. Knows nothing about what the messages mean: it hands
// each parsed message to `onMessage` and tells `onOpen`/`onDown`.

const BASE_MS = 500;
const MAX_MS = 15000;

export class Socket {
  /**
   * handlers: onMessage(msg), onReady() (the daemon greeted us: resync now),
   * onState(state, detail), onAuthRequired(message).
   */
  constructor(path, handlers) {
    this.path = path;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.nextId = 1;
    this.state = "idle";
    this.authFailed = false;
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}${this.path}`;
  }

  setState(state, detail = "") {
    this.state = state;
    this.h.onState?.(state, detail);
  }

  start() {
    this.stopped = false;
    this.authFailed = false;
    if (!this.ws && !this.timer) this.open();
  }

  /** Closes and stays closed (logout, login form shown). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onerror = ws.onmessage = ws.onopen = null;
      ws.close(1000);
    }
    this.setState("idle");
  }

  open() {
    this.timer = null;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.schedule(String(e));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== "string") return;
      if (msg.type === "connection_established") {
        this.attempt = 0;
        this.setState("live");
        this.h.onReady?.(msg);
      } else if (msg.type === "error" && /^auth|authentication|token expired/i.test(msg.message || "")) {
        this.authFailed = true;
        this.h.onAuthRequired?.(msg.message);
      }
      this.h.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.authFailed || (ev.code === 1008 && /auth|token/i.test(ev.reason))) {
        this.stopped = true;
        this.setState("auth", ev.reason || "authentication required");
        this.h.onAuthRequired?.(ev.reason);
        return;
      }
      this.h.onDown?.();
      if (!this.stopped) this.schedule(ev.reason || (ev.code === 1006 ? "connection lost" : `closed ${ev.code}`));
    };
    // The close event follows and carries the details.
    ws.onerror = () => {};
  }

  schedule(why) {
    const ceiling = Math.min(MAX_MS, BASE_MS * 2 ** this.attempt);
    // Full jitter between half and all of the ceiling: clients that lost the
    // same daemon do not come back in step.
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt = Math.min(this.attempt + 1, 10);
    this.setState("down", `${why}; retry in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Reconnects now (the "retry now" button). */
  retryNow() {
    if (this.ws || this.stopped) return;
    clearTimeout(this.timer);
    this.open();
  }

  isOpen() {
    return this.state === "live" && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends `msg` if connected; returns whether it went out. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends `msg` with a fresh `request_id`; returns the id (or null). */
  request(msg) {
    const request_id = `r${this.nextId++}`;
    return this.send({ ...msg, request_id }) ? request_id : null;
  }
}
