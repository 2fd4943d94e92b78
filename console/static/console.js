// The console's only script (no framework, nothing from another site): an element with
// data-refresh="URL" data-every="ms" gets its content replaced by the server-rendered HTML
// fragment at URL, periodically; a "replay all matching" button asks for confirmation.
"use strict";
for (const box of document.querySelectorAll("[data-refresh]")) {
  const every = Number(box.dataset.every || 5000);
  const refresh = async () => {
    try {
      const answer = await fetch(box.dataset.refresh, { credentials: "same-origin" });
      if (answer.ok && !answer.redirected) box.innerHTML = await answer.text();
    } catch (_) { /* the next round tries again */ }
    setTimeout(refresh, every);
  };
  setTimeout(refresh, every);
}
for (const button of document.querySelectorAll("button[data-all]")) {
  button.addEventListener("click", (event) => {
    if (!confirm("Replay every message matching the filter (up to 200)?")) event.preventDefault();
  });
}
