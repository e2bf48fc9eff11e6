// Quarry's dashboard script: the only one its pages load (CSP 'self', nothing inline).
// [data-refresh]: swapped for the fragment at its URL every data-every ms; with
// data-until-final it stops, and the page reloads once, when the job and its last attempt
// have ended (data-settled).
// [data-log]: a job's log, followed from where it was read to until the job ends.
// [data-load]: a fragment fetched once after the page shows (slow figures, e.g. a health check).
"use strict";
(function () {
  const FINAL = ["succeeded", "failed", "cancelled"];

  async function get(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "quarry" } });
    if (response.redirected && new URL(response.url).pathname === "/login") {
      window.location.reload(); // the session ended: the page sends to the login
      return null;
    }
    return response;
  }

  function refresh(node) {
    const every = Number(node.dataset.every || 2000);
    const tick = async function () {
      try {
        const response = await get(node.dataset.refresh);
        if (response && response.ok) {
          node.innerHTML = await response.text();
          const state = node.querySelector("[data-status]");
          if (node.hasAttribute("data-until-final") && state && state.dataset.settled === "true") {
            window.location.reload();
            return;
          }
        }
      } catch (e) { /* the server restarting: try again */ }
      window.setTimeout(tick, every);
    };
    window.setTimeout(tick, every);
  }

  function follow(node) {
    let offset = 0, attempt = 0;
    const tick = async function () {
      let again = true;
      try {
        const url = node.dataset.log + "?offset=" + offset + "&attempt=" + attempt;
        const response = await get(url);
        if (response && response.ok) {
          const text = await response.text();
          const number = Number(response.headers.get("X-Attempt") || 0);
          if (number !== attempt) { node.textContent = ""; attempt = number; }
          const atEnd = node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
          if (text) { node.append(text); }
          if (atEnd) { node.scrollTop = node.scrollHeight; }
          offset = Number(response.headers.get("X-Offset") || offset);
          node.dataset.status = response.headers.get("X-Status") || "";
          again = !(FINAL.includes(node.dataset.status) && !text);
        }
      } catch (e) { /* try again */ }
      if (again) { window.setTimeout(tick, 700); } else { node.dataset.done = "true"; }
    };
    tick();
  }

  async function load(node) {
    try {
      const response = await get(node.dataset.load);
      if (response) { node.innerHTML = await response.text(); node.dataset.loaded = "true"; }
    } catch (e) {
      node.textContent = "could not load: " + e;
    }
  }

  function start() {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-log]").forEach(follow);
    document.querySelectorAll("[data-load]").forEach(load);
    // a compare form: at most two runs ticked
    document.querySelectorAll("form[data-pick]").forEach(function (form) {
      const most = Number(form.dataset.pick);
      form.addEventListener("change", function () {
        const ticked = form.querySelectorAll("input[type=checkbox]:checked");
        form.querySelectorAll("input[type=checkbox]").forEach(function (box) {
          box.disabled = !box.checked && ticked.length >= most;
        });
        const go = form.querySelector("button[type=submit]");
        if (go) { go.disabled = ticked.length !== most; }
      });
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
