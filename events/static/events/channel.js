// The channel page: the recent history first (a rewind), then live, every value
// shown as text with the one rule of pushsite.js (messageText). A refusal
// (401 / 403 / 404) stops the client and the page says what to do.
import { explainRefusal, messageText, subscribe } from "./pushsite.js";

const list = document.getElementById("events");
const status = document.getElementById("status");
const empty = document.getElementById("empty");
const MAX_ITEMS = 200;
const TYPES = ["message", "score", "announcement", "status", "notice", "update", "pushsite.reset"];

function show(data, envelope, event) {
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  // The message's number, not the stream id (which also carries the channel's epoch).
  const number = envelope.id === undefined ? "" : `#${envelope.id} `;
  const when = envelope.published_at ? ` · ${new Date(envelope.published_at).toLocaleTimeString()}` : "";
  meta.textContent = `${number}${envelope.event}${when}`;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = envelope.event === "pushsite.reset" ? "Some older messages are no longer stored." : messageText(data);
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
const feed = subscribe({
  channels: [list.dataset.channel],
  rewind: Number(list.dataset.rewind) || 0,
  // Each load shows the recent history; a saved position would show only what is new.
  persist: false,
  onState: (state, detail) => {
    if (detail instanceof Error) return; // onError says it
    status.textContent = labels[state] || state;
    status.dataset.state = state;
  },
  onError: refused,
});
for (const type of TYPES) feed.on(type, show);
list.pushsite = feed; // for tests and pages that want to close it

const form = document.getElementById("publish");
if (form) {
  form.addEventListener("submit", async (submitEvent) => {
    submitEvent.preventDefault();
    const error = document.getElementById("publish-error");
    error.textContent = "";
    const fields = new FormData(form);
    const eventType = fields.get("event");
    feed.on(eventType, show); // the stream delivers only the types it listens to
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
