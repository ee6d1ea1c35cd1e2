// The announcement banner: shows, updates and removes announcements as they change.
// Server-rendered announcements are already on the page; this subscribes from the
// position the page was rendered at, so nothing in between is missed.
import { subscribe } from "./pushsite.js";

const DISMISSED = "pushsite:dismissed";

function dismissed() {
  try {
    return new Set(JSON.parse(window.localStorage.getItem(DISMISSED) || "[]"));
  } catch {
    return new Set();
  }
}

function rememberDismissal(key) {
  const keys = dismissed();
  keys.add(key);
  try {
    window.localStorage.setItem(DISMISSED, JSON.stringify([...keys].slice(-200)));
  } catch {
    /* storage disabled: the dismissal lasts until reload */
  }
}

function isExpired(expiresAt) {
  return Boolean(expiresAt) && new Date(expiresAt).getTime() <= Date.now();
}

function render(container, a) {
  const box = document.createElement("div");
  box.className = `pushsite-announcement pushsite-${["info", "warning", "critical"].includes(a.level) ? a.level : "info"}`;
  box.dataset.id = a.id;
  box.dataset.version = a.version;
  if (a.expires_at) box.dataset.expiresAt = a.expires_at;
  const text = document.createElement("div");
  text.className = "pushsite-announcement-text";
  const title = document.createElement("strong");
  title.className = "pushsite-announcement-title";
  title.textContent = a.title;
  const body = document.createElement("span");
  body.className = "pushsite-announcement-body";
  body.textContent = a.body;
  text.append(title, body);
  if (a.link && /^https?:\/\//i.test(a.link)) {
    const link = document.createElement("a");
    link.className = "pushsite-announcement-link";
    link.href = a.link;
    link.rel = "noopener";
    link.textContent = "More";
    text.append(link);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "pushsite-dismiss";
  button.setAttribute("aria-label", `Dismiss: ${a.title}`);
  button.textContent = "×";
  box.append(text, button);
  return box;
}

function setUp(container) {
  const byId = (id) => container.querySelector(`.pushsite-announcement[data-id="${CSS.escape(String(id))}"]`);
  const hidden = dismissed();

  function wire(box) {
    if (hidden.has(`${box.dataset.id}:${box.dataset.version}`) || isExpired(box.dataset.expiresAt)) {
      box.remove();
      return;
    }
    box.querySelector(".pushsite-dismiss").addEventListener("click", () => {
      rememberDismissal(`${box.dataset.id}:${box.dataset.version}`);
      box.remove();
    });
  }
  container.querySelectorAll(".pushsite-announcement").forEach(wire);

  function apply(a) {
    const current = byId(a.id);
    if (a.action === "retracted" || a.action === "expired" || isExpired(a.expires_at)) {
      current?.remove();
      return;
    }
    if (current && Number(current.dataset.version) > a.version) return;
    const box = render(container, a);
    if (current) current.replaceWith(box);
    else container.prepend(box);
    wire(box);
  }

  subscribe({
    server: window.location.origin,
    channels: [container.dataset.channel],
    lastEventId: container.dataset.position,
    persist: false,
    on: { announcement: apply },
    onState: (state) => {
      container.dataset.state = state; // connecting | open | reconnecting | closed
    },
  });
  // Hide announcements whose expiry passes while the page is open.
  setInterval(() => {
    container.querySelectorAll(".pushsite-announcement[data-expires-at]").forEach((box) => {
      if (isExpired(box.dataset.expiresAt)) box.remove();
    });
  }, 1000);
}

document.querySelectorAll(".pushsite-announcements[data-channel]").forEach(setUp);
