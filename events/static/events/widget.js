// Pushsite live widget: paste one tag where the feed should appear.
//
//   <script src="https://push.example.com/static/events/widget.js"
//           data-channel="scores" data-title="Live scores" data-theme="dark"
//           data-max-items="5" async></script>
//
// The feed renders in a Shadow DOM, so the host page's CSS cannot break it and
// its CSS cannot leak out. Every value is shown as text, never as HTML.
// Options: data-channel (required; several: "a,b"), data-title (default: the
// channel's title), data-theme (light | dark), data-max-items (default 10),
// data-rewind (stored messages shown on load, default: data-max-items; 0 resumes
// from the page's last position instead), data-token (private channels),
// data-events (event types to show, default: all that arrive).
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const server = new URL(script.src).origin;
  const options = script.dataset;
  const channels = (options.channel || "").split(",").map((s) => s.trim()).filter(Boolean);
  const maxItems = Math.max(1, Math.min(100, parseInt(options.maxItems || "10", 10) || 10));
  const rewindOption = parseInt(options.rewind ?? "", 10);
  const rewind = Number.isNaN(rewindOption) ? maxItems : Math.max(0, Math.min(100, rewindOption));
  const theme = options.theme === "dark" ? "dark" : "light";

  const host = document.createElement("div");
  host.className = "pushsite-widget";
  script.after(host);
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      :host { all: initial; display: block; }
      .feed { font: 14px/1.4 system-ui, sans-serif; border-radius: 8px; padding: 10px 12px;
              max-width: 420px; box-sizing: border-box; border: 1px solid var(--border);
              background: var(--bg); color: var(--fg); }
      .light { --bg: #ffffff; --fg: #1b1f24; --muted: #5b636e; --border: #d7dce2; --accent: #0a7a2f; --error: #b00020; }
      .dark  { --bg: #15181d; --fg: #e8eaed; --muted: #9aa3ad; --border: #2d333b; --accent: #4cc38a; --error: #ff6b81; }
      header { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; margin-bottom: 6px; }
      h2 { font-size: 15px; margin: 0; }
      .state { font-size: 12px; color: var(--muted); }
      .state[data-state="open"] { color: var(--accent); }
      ol { list-style: none; margin: 0; padding: 0; }
      li { padding: 6px 0; border-top: 1px solid var(--border); overflow-wrap: anywhere; }
      li:first-child { border-top: 0; }
      time { display: block; font-size: 11px; color: var(--muted); }
      .error { color: var(--error); font-size: 13px; margin: 4px 0 0; }
      .empty { color: var(--muted); font-size: 13px; }
    </style>
    <section class="feed ${theme}" part="feed">
      <header><h2></h2><span class="state" role="status" aria-live="polite">Connecting…</span></header>
      <ol aria-live="polite"></ol>
      <p class="empty">Connecting…</p>
      <p class="error" role="alert" hidden></p>
    </section>`;
  const title = root.querySelector("h2");
  const state = root.querySelector(".state");
  const list = root.querySelector("ol");
  const empty = root.querySelector(".empty");
  const problem = root.querySelector(".error");
  title.textContent = options.title || channels.join(", ") || "Live feed";

  // The error takes the place of the "no updates yet" line.
  function fail(text) {
    problem.textContent = text;
    problem.hidden = false;
    empty.hidden = true;
    state.textContent = "Unavailable";
    state.dataset.state = "closed";
  }

  if (channels.length === 0) {
    fail("This widget needs a data-channel attribute.");
    return;
  }

  let describe = String;

  function show(data, envelope) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    when.dateTime = envelope.published_at || "";
    when.textContent = envelope.published_at ? new Date(envelope.published_at).toLocaleTimeString() : "";
    const text = document.createElement("span");
    text.textContent = describe(data);
    item.append(when, text);
    // Newest first. A rewind of several channels replays them one after the
    // other, so place each item by its publishing time rather than on top.
    item.dataset.published = envelope.published_at || "";
    const older = [...list.children].find((other) => other.dataset.published <= item.dataset.published);
    list.insertBefore(item, older || null);
    empty.hidden = true;
    while (list.children.length > maxItems) list.lastElementChild.remove();
  }

  const labels = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", closed: "Closed" };
  import(new URL("pushsite.js", script.src).href)
    .then(({ subscribe, messageText, explainRefusal }) => {
      describe = messageText;
      const feed = subscribe({
        server,
        channels,
        token: options.token || "",
        rewind,
        // With a rewind the page shows the latest items on every load; a saved
        // position would only add what was missed, on an empty list.
        persist: rewind === 0,
        onState: (name, detail) => {
          state.textContent = labels[name] || name;
          state.dataset.state = name;
          if (name === "open") {
            problem.hidden = true;
            // Stored messages follow when detail.history is true: no "nothing yet" flash.
            if (!list.children.length) {
              empty.textContent = detail && detail.history ? "Loading recent updates…" : "No updates yet.";
            }
            if (!options.title && detail && detail.titles) {
              const titles = channels.map((slug) => detail.titles[slug]).filter(Boolean);
              if (titles.length) title.textContent = titles.join(", ");
            }
          }
        },
        onError: (error) => fail(explainRefusal(error)),
      });
      const types = (options.events || "").split(",").map((s) => s.trim()).filter(Boolean);
      for (const type of types.length ? types : ["message", "score", "status", "notice", "update"]) {
        feed.on(type, show);
      }
      host.pushsite = feed; // for pages that want to close it
    })
    .catch(() => fail("The live feed could not be loaded."));
})();
