// Pushsite browser client: one EventSource for one or several channels.
//
//   import { subscribe } from "https://push.example.com/static/events/pushsite.js";
//   const feed = subscribe({
//     server: "https://push.example.com",
//     channels: ["scores"],
//     on: { score: (data, envelope) => render(data) },
//     onState: (state, detail) => showStatus(state),    // connecting | open | reconnecting | closed
//     onError: (error) => showError(error.detail),        // 401 / 403 / 404: no retrying
//     getToken: async () => (await fetch("/my-token")).text(),  // private channels
//     rewind: 10,    // first connection: the last 10 stored messages of each channel, then live
//   });
//   feed.close();
//
// Plain ES module, no dependencies, no build step. The position (Last-Event-ID)
// is kept in sessionStorage, so a page reload resumes exactly where it was.

const RESERVED = "pushsite.";
const MAX_BACKOFF_MS = 30000;
const TEXT_FIELDS = ["message", "status"];

function compact(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/**
 * A message's payload as one line of text, the same everywhere Pushsite shows one
 * (channel pages, the widget, the iframe; docs/widgets.md, "How a message reads"):
 * a string as it is; an object's `text`; its `title` (with its `body` or `message`
 * after a dash); its `message`; its `status`; otherwise its fields as
 * "key: value, key: value" (nested values as compact JSON). Always text, never HTML.
 */
export function messageText(data) {
  if (data === null || data === undefined) return "";
  if (typeof data !== "object") return String(data);
  if (Array.isArray(data)) return data.map(compact).join(", ");
  if (typeof data.text === "string") return data.text;
  if (typeof data.title === "string") {
    const more = [data.body, data.message].find((value) => typeof value === "string" && value);
    return more ? `${data.title} — ${more}` : data.title;
  }
  for (const field of TEXT_FIELDS) {
    if (typeof data[field] === "string") return data[field];
  }
  return Object.entries(data)
    .map(([key, value]) => `${key}: ${compact(value)}`)
    .join(", ");
}

function storageKey(server, channels) {
  return `pushsite:${server}:${[...channels].sort().join(",")}`;
}

function readPosition(key) {
  try {
    return window.sessionStorage.getItem(key) || "";
  } catch {
    return ""; // storage disabled (privacy mode, sandboxed iframe)
  }
}

function savePosition(key, id) {
  try {
    window.sessionStorage.setItem(key, id);
  } catch {
    /* keep going without persistence */
  }
}

export class PushsiteError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/**
 * What a person should read when a subscription is refused for good (401, 403, 404):
 * what happened and what to do, followed by the server's own sentence where it helps.
 */
export function explainRefusal(error) {
  const detail = error && error.detail ? String(error.detail) : "";
  switch (error && error.status) {
    case 401:
      return "Log in to read this channel.";
    case 403:
      if (error.code === "token_expired") return "Access to this channel has expired: reload the page.";
      if (/does not allow pages from/.test(detail)) return `This site may not show this channel. ${detail}`;
      return `You may not read this channel. ${detail}`.trim();
    case 404:
      // Private channels answer like missing ones (docs/security.md): say both.
      return "This channel does not exist, is switched off, or needs you to log in: check its name.";
    default:
      return detail || "The live feed is not available.";
  }
}

export class Subscription {
  constructor(options) {
    if (!options || !Array.isArray(options.channels) || options.channels.length === 0) {
      throw new TypeError("subscribe() needs channels: a non-empty array of channel slugs.");
    }
    this.server = (options.server || window.location.origin).replace(/\/+$/, "");
    this.channels = [...options.channels];
    this.handlers = new Map();
    this.onState = options.onState || (() => {});
    this.onError = options.onError || ((error) => console.error("Pushsite:", error.detail));
    this.getToken = options.getToken || null;
    this.token = options.token || "";
    this.persist = options.persist !== false;
    this.key = storageKey(this.server, this.channels);
    this.lastEventId = options.lastEventId || (this.persist ? readPosition(this.key) : "");
    // Only asked for while there is no position: a resume point (Last-Event-ID) wins.
    this.rewind = Math.max(0, Math.floor(Number(options.rewind) || 0));
    this.state = "closed";
    this.titles = {};
    this.failures = 0;
    this.source = null;
    this.timer = null;
    this.stopped = false;
    for (const [type, handler] of Object.entries(options.on || {})) this.on(type, handler);
    this.connect();
  }

  /** Call handler(data, envelope, event) for every event of this type ("message" is the default type). */
  on(type, handler) {
    if (!this.handlers.has(type)) {
      this.handlers.set(type, new Set());
      if (this.source) this.listen(this.source, type);
    }
    this.handlers.get(type).add(handler);
    return this;
  }

  off(type, handler) {
    this.handlers.get(type)?.delete(handler);
    return this;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.setState("closed");
  }

  setState(state, detail) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state, detail);
  }

  url() {
    const params = new URLSearchParams();
    let path = "/events/";
    if (this.channels.length === 1) path += `${encodeURIComponent(this.channels[0])}/`;
    else for (const channel of this.channels) params.append("channel", channel);
    // A new EventSource does not send Last-Event-ID: the position goes in the query.
    if (this.lastEventId) params.set("lastEventId", this.lastEventId);
    else if (this.rewind) params.set("rewind", String(this.rewind));
    if (this.token) params.set("token", this.token);
    const query = params.toString();
    return `${this.server}${path}${query ? `?${query}` : ""}`;
  }

  connect() {
    if (this.stopped) return;
    this.setState(this.failures === 0 && this.state !== "reconnecting" ? "connecting" : "reconnecting");
    const source = new EventSource(this.url());
    this.source = source;
    source.addEventListener("pushsite.open", (event) => {
      this.failures = 0;
      this.remember(event);
      let opened = {};
      try {
        opened = JSON.parse(event.data);
      } catch {
        /* an older server: no details */
      }
      // Each channel's title, by slug: a default heading for pages and widgets.
      this.titles = opened.titles || {};
      this.setState("open", opened);
    });
    source.addEventListener("pushsite.reset", (event) => {
      this.remember(event);
      this.dispatch("pushsite.reset", event);
    });
    source.addEventListener("pushsite.close", (event) => {
      // The server ended the stream (token expired, shutdown): reconnect now.
      const reason = JSON.parse(event.data).reason || "";
      source.close();
      this.reconnect(reason.includes("token") ? "token" : "server");
    });
    for (const type of this.handlers.keys()) this.listen(source, type);
    source.onerror = () => {
      if (source !== this.source || this.stopped) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself, sending Last-Event-ID.
        this.setState("reconnecting");
        return;
      }
      source.close();
      this.diagnose();
    };
  }

  listen(source, type) {
    if (type.startsWith(RESERVED) && type !== "pushsite.reset") return;
    source.addEventListener(type, (event) => {
      this.remember(event);
      this.dispatch(type, event);
    });
  }

  remember(event) {
    if (!event.lastEventId) return;
    this.lastEventId = event.lastEventId;
    if (this.persist) savePosition(this.key, event.lastEventId);
  }

  dispatch(type, event) {
    let envelope;
    try {
      envelope = JSON.parse(event.data);
    } catch {
      return;
    }
    for (const handler of this.handlers.get(type) || []) {
      try {
        handler(envelope.data, envelope, event);
      } catch (error) {
        console.error("Pushsite handler failed:", error);
      }
    }
  }

  // The EventSource gave up (a non-200 answer, or the network): find out which.
  async diagnose() {
    let status = 0;
    let problem = { error: "network", detail: "The server cannot be reached." };
    try {
      const response = await fetch(this.url(), { headers: { Accept: "text/event-stream" } });
      status = response.status;
      if (status === 200) {
        response.body?.cancel();
      } else {
        problem = await response.json().catch(() => ({ error: "http", detail: response.statusText }));
      }
    } catch {
      /* a network error or a CORS refusal: retry with backoff */
    }
    if (this.stopped) return;
    if ((status === 401 || status === 403) && this.getToken && problem.error !== "channel_not_found") {
      if (this.failures < 2) return this.reconnect("token");
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      const error = new PushsiteError(status, problem.error, problem.detail);
      this.stopped = true;
      this.setState("closed", error);
      this.onError(error);
      return;
    }
    this.reconnect("network");
  }

  async reconnect(why) {
    if (this.stopped) return;
    this.failures += 1;
    this.setState("reconnecting");
    if (why === "token" && this.getToken) {
      try {
        this.token = await this.getToken();
      } catch (error) {
        console.error("Pushsite: getToken failed:", error);
      }
    }
    // Exponential backoff with jitter, so that a restarted server is not hit
    // by every client at the same instant. The first retry is immediate.
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures - 1, 6));
    const delay = this.failures === 1 ? 0 : base / 2 + Math.random() * (base / 2);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** Subscribe to one or several channels over one connection. */
export function subscribe(options) {
  return new Subscription(options);
}
