// The channel page: the recent history first (a rewind), then live, every value
// shown as text with the one rule of pushsite.js (messageText). It reads the NDJSON
// form of the stream (docs/streaming.md): an EventSource delivers only the event
// types it listens for, and this page shows every type, known or not. A refusal
// (401 / 403 / 404) stops the client and the page says what to do.
import { explainRefusal, messageText } from "./pushsite.js";

const list = document.getElementById("events");
const status = document.getElementById("status");
const empty = document.getElementById("empty");
const MAX_ITEMS = 200;
const MAX_BACKOFF_MS = 30000;
const BODIES = { "pushsite.reset": () => "Some older messages are no longer stored." };

function show(data, envelope) {
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  // The message's number, not the stream id (which also carries the channel's epoch).
  const number = envelope.id === undefined ? "" : `#${envelope.id} `;
  const when = envelope.published_at ? ` · ${new Date(envelope.published_at).toLocaleTimeString()}` : "";
  meta.textContent = `${number}${envelope.event}${when}`;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = (BODIES[envelope.event] || messageText)(data);
  item.append(meta, body);
  list.prepend(item);
  if (empty) empty.hidden = true;
  while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
}

function refused(error) {
  status.textContent = explainRefusal(error);
  status.dataset.state = "refused";
  if (error.status === 401 && status.dataset.login) {
    const link = document.createElement("a");
    link.href = status.dataset.login;
    link.textContent = "Log in";
    status.append(" ", link);
  }
  if (empty) empty.hidden = true;
}

const labels = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", closed: "Closed" };
function setState(state) {
  status.textContent = labels[state] || state;
  status.dataset.state = state;
}

// One subscriber: reconnects after `cursor` (the last line's), with backoff.
const feed = {
  cursor: "",
  failures: 0,
  stopped: false,
  controller: null,
  close() {
    this.stopped = true;
    this.controller?.abort();
    setState("closed");
  },
  url() {
    const params = new URLSearchParams({ format: "ndjson" });
    if (this.cursor) params.set("after", this.cursor);
    else if (Number(list.dataset.rewind)) params.set("rewind", list.dataset.rewind);
    return `/events/${encodeURIComponent(list.dataset.channel)}/?${params}`;
  },
  line(text) {
    if (!text) return; // a heartbeat
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (event.cursor) this.cursor = event.cursor;
    if (event.event === "pushsite.open") {
      this.failures = 0;
      setState("open");
    } else if (event.event && (!event.event.startsWith("pushsite.") || event.event === "pushsite.reset")) {
      show(event.data, event);
    }
  },
  async read(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const text of lines) this.line(text);
    }
  },
  async run() {
    while (!this.stopped) {
      setState(this.failures === 0 ? "connecting" : "reconnecting");
      this.controller = new AbortController();
      try {
        const response = await fetch(this.url(), { signal: this.controller.signal });
        if (response.ok) {
          await this.read(response);
        } else if (response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status)) {
          const problem = await response.json().catch(() => ({ error: "http", detail: response.statusText }));
          this.stopped = true;
          refused({ status: response.status, code: problem.error, detail: problem.detail });
          return;
        }
      } catch {
        /* the network, or close(): retry unless stopped */
      }
      if (this.stopped) return;
      this.failures += 1;
      setState("reconnecting");
      // Exponential backoff with jitter; the first retry is immediate.
      const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures - 1, 6));
      const delay = this.failures === 1 ? 0 : base / 2 + Math.random() * (base / 2);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  },
};
feed.run();
list.pushsite = feed; // for tests and pages that want to close it

const form = document.getElementById("publish");
if (form) {
  form.addEventListener("submit", async (submitEvent) => {
    submitEvent.preventDefault();
    const error = document.getElementById("publish-error");
    error.textContent = "";
    const fields = new FormData(form);
    const eventType = fields.get("event");
    const response = await fetch(form.dataset.endpoint, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRFToken": fields.get("csrfmiddlewaretoken"),
      },
      body: JSON.stringify({ event: eventType, data: fields.get("text") }),
    });
    if (response.ok) {
      form.elements.text.value = "";
    } else {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      error.textContent = problem.detail;
    }
  });
}
