// The streamed-answer demo: tokens of one stream appended as they arrive, always as text.
const list = document.getElementById("answers");
const status = document.getElementById("status");
const source = new EventSource(list.dataset.stream);
const answers = new Map(); // stream id -> {text, meta}

function answerFor(stream) {
  let answer = answers.get(stream);
  if (!answer) {
    const item = document.createElement("li");
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = "streaming…";
    const text = document.createElement("span");
    text.className = "body";
    item.append(meta, text);
    list.prepend(item);
    while (list.children.length > 20) list.lastElementChild.remove();
    answer = { text, meta };
    answers.set(stream, answer);
  }
  return answer;
}

function envelope(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return null;
  }
}

source.addEventListener("token", (event) => {
  const part = envelope(event)?.data;
  if (!part || typeof part.data !== "string") return;
  answerFor(part.stream).text.textContent += part.data;
});

source.addEventListener("pushsite.stream.end", (event) => {
  const end = envelope(event)?.data;
  if (!end) return;
  const answer = answerFor(end.stream);
  // A folded channel's end event holds the whole answer: authoritative, and
  // what a page that joined mid-answer was missing.
  if (Array.isArray(end.folded)) {
    answer.text.textContent = end.folded.map((part) => String(part.data)).join("");
  }
  answer.meta.textContent =
    end.status === "done" ? `done · ${end.parts} tokens` : `failed after ${end.parts} tokens: ${end.reason}`;
  answer.meta.dataset.status = end.status;
});

source.onopen = () => { status.textContent = "Live"; status.dataset.state = "open"; };
source.onerror = () => { status.textContent = "Reconnecting…"; status.dataset.state = "reconnecting"; };

const form = document.getElementById("ask");
form.addEventListener("submit", async (submitEvent) => {
  submitEvent.preventDefault();
  const error = document.getElementById("ask-error");
  error.textContent = "";
  const fields = new FormData(form);
  const response = await fetch(form.dataset.endpoint, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRFToken": fields.get("csrfmiddlewaretoken") },
    body: new URLSearchParams({ question: fields.get("question") }),
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ detail: response.statusText }));
    error.textContent = problem.detail;
  }
});
