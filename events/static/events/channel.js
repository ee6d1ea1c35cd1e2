// The demo channel page: a native EventSource, every value shown as text.
const list = document.getElementById("events");
const status = document.getElementById("status");
const source = new EventSource(list.dataset.stream);

function show(event) {
  let envelope;
  try {
    envelope = JSON.parse(event.data);
  } catch {
    return;
  }
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  // The message's number, not the stream id (which also carries the channel's epoch).
  const number = envelope.id === undefined ? "" : `#${envelope.id} `;
  meta.textContent = `${number}${envelope.event} · ${new Date(envelope.published_at).toLocaleTimeString()}`;
  const body = document.createElement("span");
  body.className = "body";
  const data = envelope.data;
  body.textContent = typeof data === "string" ? data : JSON.stringify(data);
  item.append(meta, body);
  list.prepend(item);
  while (list.children.length > 200) list.lastElementChild.remove();
}

source.onopen = () => { status.textContent = "Live"; status.dataset.state = "open"; };
source.onerror = () => { status.textContent = "Reconnecting…"; status.dataset.state = "reconnecting"; };
source.onmessage = show;
// Named event types do not reach onmessage: listen to every type we see.
const originalAdd = new Set(["message"]);
source.addEventListener("pushsite.reset", show);
for (const type of ["score", "announcement", "status", "notice"]) {
  originalAdd.add(type);
  source.addEventListener(type, show);
}

const form = document.getElementById("publish");
if (form) {
  form.addEventListener("submit", async (submitEvent) => {
    submitEvent.preventDefault();
    const error = document.getElementById("publish-error");
    error.textContent = "";
    const fields = new FormData(form);
    const eventType = fields.get("event");
    if (!originalAdd.has(eventType)) {
      originalAdd.add(eventType);
      source.addEventListener(eventType, show);
    }
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
