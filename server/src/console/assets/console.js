// taskplane console: the theme switch, live refresh and keyboard moves
// between table rows. No inline script runs (the Content-Security-Policy
// allows this file only).
"use strict";

(function theme() {
  const saved = localStorage.getItem("taskplane-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme");
    if (!button) return;
    button.addEventListener("click", () => {
      const dark = document.documentElement.dataset.theme
        ? document.documentElement.dataset.theme === "dark"
        : matchMedia("(prefers-color-scheme: dark)").matches;
      const next = dark ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("taskplane-theme", next);
    });
  });
})();

// When the server says the queue changed, fetch this page again and swap
// in its live part (#live), keeping the filters and the scroll position.
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  const state = document.getElementById("live-state");
  if (!live || !window.EventSource) return;
  let fetching = false;
  let again = false;
  const refresh = async () => {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      const answer = await fetch(location.href, { credentials: "same-origin" });
      if (answer.ok) {
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.getElementById("live");
        const current = document.getElementById("live");
        if (fresh && current && !current.contains(document.activeElement)) {
          current.replaceWith(document.importNode(fresh, true));
        }
      }
    } finally {
      fetching = false;
      if (again) { again = false; refresh(); }
    }
  };
  const events = new EventSource("/events");
  events.addEventListener("open", () => {
    document.body.dataset.live = "connected";
    if (state) { state.textContent = "●"; state.classList.add("on"); }
    // What changed between rendering this page and subscribing.
    refresh();
  });
  // A page left behind (or kept in the back-forward cache) lets its
  // connection go: browsers allow only six per site.
  window.addEventListener("pagehide", () => events.close());
  events.addEventListener("error", () => {
    document.body.dataset.live = "reconnecting";
    if (state) { state.textContent = "○"; state.classList.remove("on"); }
  });
  events.addEventListener("refresh", refresh);
});

// Arrow keys move between the rows of a table of links; Enter opens one.
document.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const link = document.activeElement;
  const row = link && link.closest && link.closest("table.grid tbody tr");
  if (!row) return;
  const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
  const target = next && next.querySelector("a, button");
  if (target) { target.focus(); event.preventDefault(); }
});
