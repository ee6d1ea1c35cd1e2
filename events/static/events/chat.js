// A chat room page. Messages rendered by the server come first; this script
// then resumes live from the last of them, so nothing falls in between.
//
// Many tabs, one connection: browsers allow 6 HTTP/1.1 connections per origin,
// so the tabs of one room share a stream. The tab holding the Web Lock
// "pushsite-room-<slug>" owns the EventSource and re-broadcasts every event on
// a BroadcastChannel; when it closes, the lock passes to another tab, which
// connects from the last id it has seen (a resume: nothing lost). Posting is a
// short fetch() from whichever tab, so it never holds a connection.
// Every user-supplied value is written with textContent: never as HTML.

import { subscribe } from "./pushsite.js";

const TYPES = ["chat.message", "chat.deleted", "chat.typing", "presence"];
const MAX_SHOWN = 300;
const TYPING_SHOWN_MS = 3000;
const TYPING_SEND_EVERY_MS = 2000;
const TIME_FORMAT = { hour: "2-digit", minute: "2-digit" };
const STATES = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", closed: "Disconnected" };

const root = document.getElementById("room");
const cfg = root.dataset;
const slug = cfg.slug;
const log = document.getElementById("log");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("post-error");
const typingLine = document.getElementById("typing");
const staff = cfg.staff === "1";
let lastId = Number(cfg.lastId) || 0; // highest stored event received from the stream
const typingTimers = new Map();

// --- rendering -----------------------------------------------------------------

function button(action, label, text) {
  const element = document.createElement("button");
  element.type = "button";
  element.dataset.action = action;
  element.setAttribute("aria-label", label);
  element.textContent = text;
  return element;
}

function showMessage(envelope) {
  const data = envelope.data && typeof envelope.data === "object" ? envelope.data : {};
  if (data.deleted || document.getElementById(`msg-${envelope.id}`)) return;
  const author = data.author && typeof data.author === "object" ? data.author : {};
  const name = String(author.name ?? "");
  const item = document.createElement("li");
  item.id = `msg-${envelope.id}`;
  item.className = "msg";
  item.dataset.id = String(envelope.id);
  item.dataset.author = `${author.guest ? "guest" : "user"}:${name}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = name;
  if (author.guest) {
    const tag = document.createElement("span");
    tag.className = "guest";
    tag.textContent = " (guest)";
    who.append(tag);
  }
  const time = document.createElement("time");
  const at = new Date(envelope.published_at);
  time.dateTime = envelope.published_at;
  time.textContent = at.toLocaleTimeString([], TIME_FORMAT);
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = String(data.text ?? "");
  item.append(who, time, text);
  if (staff) {
    const mod = document.createElement("span");
    mod.className = "mod";
    mod.append(
      button("delete", `Delete this message from ${name}`, "Delete"),
      button("mute", `Mute ${name} in this room for an hour`, "Mute"),
    );
    item.append(mod);
  }
  // Keep the order of ids even when our own message (shown from the POST
  // answer) arrives before an earlier one from the stream.
  const later = [...log.children].find((other) => Number(other.dataset.id) > envelope.id);
  const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.insertBefore(item, later || null);
  while (log.children.length > MAX_SHOWN) log.firstElementChild.remove();
  if (stick) log.scrollTop = log.scrollHeight;
}

function removeMessage(id) {
  document.getElementById(`msg-${Number(id)}`)?.remove();
}

let presenceEvents = 0; // presence events seen: a snapshot fetched meanwhile is older

function showPresence(data) {
  const people = Array.isArray(data?.people) ? data.people : [];
  document.getElementById("here-count").textContent = String(people.length);
  const list = document.getElementById("here");
  list.replaceChildren(
    ...people.map((person) => {
      const item = document.createElement("li");
      item.textContent = String(person.name ?? "");
      if (person.guest) {
        const tag = document.createElement("span");
        tag.className = "guest";
        tag.textContent = " (guest)";
        item.append(tag);
      }
      return item;
    }),
  );
}

function showTyping(data) {
  const author = data?.author || {};
  const label = `${author.guest ? "guest" : "user"}:${author.name}`;
  if (label === cfg.me) return;
  clearTimeout(typingTimers.get(label));
  typingTimers.set(label, setTimeout(() => { typingTimers.delete(label); renderTyping(); }, TYPING_SHOWN_MS));
  renderTyping();
}

function renderTyping() {
  const names = [...typingTimers.keys()].map((label) => label.slice(label.indexOf(":") + 1));
  typingLine.textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

function setState(state) {
  statusLine.textContent = STATES[state] || state;
  statusLine.dataset.state = state;
}

function handle(type, envelope) {
  if (typeof envelope.id === "number" && envelope.id > lastId) lastId = envelope.id;
  if (type === "chat.message") showMessage(envelope);
  else if (type === "chat.deleted") removeMessage(envelope.data?.id);
  else if (type === "presence") {
    presenceEvents += 1;
    showPresence(envelope.data);
  }
  else if (type === "chat.typing") showTyping(envelope.data);
}

// The server rendered times in UTC: show them in the reader's time, like live ones.
for (const time of log.querySelectorAll("time[datetime]")) {
  time.textContent = new Date(time.dateTime).toLocaleTimeString([], TIME_FORMAT);
}

// --- one stream for all tabs ------------------------------------------------------

const bus = "BroadcastChannel" in window ? new BroadcastChannel(`pushsite-room-${slug}`) : null;
let leader = false;
let state = "connecting";

function lead() {
  leader = true;
  root.dataset.role = "leader";
  const on = {};
  for (const type of TYPES) {
    on[type] = (_data, envelope) => {
      handle(type, envelope);
      bus?.postMessage({ kind: "event", type, envelope });
    };
  }
  subscribe({
    channels: [slug],
    lastEventId: String(lastId),
    persist: false, // the page knows its position: the last message it rendered
    on,
    onState: (next) => {
      state = next;
      setState(next);
      bus?.postMessage({ kind: "state", state: next });
      if (next === "open") refreshPresence();
    },
    onError: (error) => {
      errorLine.textContent = error.detail;
    },
  });
}

if (bus) {
  bus.onmessage = ({ data }) => {
    if (data.kind === "event") handle(data.type, data.envelope);
    else if (data.kind === "state" && !leader) setState(data.state);
    else if (data.kind === "hello" && leader) bus.postMessage({ kind: "state", state });
  };
}

if (bus && navigator.locks) {
  root.dataset.role = "follower";
  // Held until this tab closes; then the next tab in line takes over.
  navigator.locks.request(`pushsite-room-${slug}`, () => {
    lead();
    return new Promise(() => {});
  });
  bus.postMessage({ kind: "hello" });
} else {
  // No Web Locks (an insecure origin other than localhost) or no
  // BroadcastChannel: every tab has its own connection.
  lead();
}

async function refreshPresence() {
  const seen = presenceEvents;
  try {
    const response = await fetch(cfg.presenceUrl, { credentials: "same-origin" });
    if (response.ok) {
      const snapshot = await response.json();
      if (presenceEvents !== seen) return; // an event overtook this answer: it is newer
      showPresence(snapshot);
      bus?.postMessage({ kind: "event", type: "presence", envelope: { data: snapshot } });
    }
  } catch {
    /* the next presence event corrects it */
  }
}

// --- actions ----------------------------------------------------------------------

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
    body: JSON.stringify(body ?? {}),
  });
  const payload = await response.json().catch(() => ({ detail: response.statusText }));
  return { ok: response.ok, status: response.status, payload };
}

const form = document.getElementById("post-form");
if (form) {
  const input = form.elements.text;
  let lastTyping = 0;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    errorLine.textContent = "";
    // Cleared at once, so the next message can be typed while this one is
    // on its way; put back if it was refused and nothing new was typed.
    input.value = "";
    const restore = (detail) => {
      errorLine.textContent = detail;
      if (!input.value) input.value = text;
    };
    try {
      const { ok, payload } = await post(cfg.postUrl, { text });
      if (ok) showMessage(payload); // at once; the stream's copy is then a duplicate
      else restore(payload.detail || "The message was not sent.");
    } catch {
      restore("The server cannot be reached; the message was not sent.");
    } finally {
      input.focus();
    }
  });
  input.addEventListener("input", () => {
    const now = Date.now();
    if (!input.value || now - lastTyping < TYPING_SEND_EVERY_MS) return;
    lastTyping = now;
    post(cfg.typingUrl).catch(() => {});
  });
}

const guestForm = document.getElementById("guest-form");
if (guestForm) {
  guestForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorLine.textContent = "";
    const { ok, payload } = await post(cfg.guestUrl, { nickname: guestForm.elements.nickname.value });
    // Reload: the page and the stream then know the nickname (presence, posting).
    if (ok) window.location.reload();
    else errorLine.textContent = payload.detail;
  });
}

log.addEventListener("click", async (event) => {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const item = target.closest(".msg");
  errorLine.textContent = "";
  if (target.dataset.action === "delete") {
    const { ok, payload } = await post(cfg.deleteUrl.replace(/\/0\/delete$/, `/${Number(item.dataset.id)}/delete`));
    if (ok) item.remove();
    else errorLine.textContent = payload.detail;
  } else if (target.dataset.action === "mute") {
    const { ok, payload } = await post(cfg.muteUrl, { author: item.dataset.author, minutes: 60 });
    statusLine.textContent = ok ? `Muted ${payload.author.slice(payload.author.indexOf(":") + 1)} for an hour.` : "";
    if (!ok) errorLine.textContent = payload.detail;
  }
});
