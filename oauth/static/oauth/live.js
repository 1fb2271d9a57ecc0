/* Butlers OAuth dashboard: keeps the account cards and action runs current without a reload.
   The region #live is fetched again from its data-live-url; the fragment's data-poll-ms says
   when to ask next (often while an action runs, seldom otherwise). No inline script or handler:
   the Content-Security-Policy allows scripts from 'self' only. */
(function () {
  "use strict";
  var region = document.getElementById("live");
  if (!region || !window.fetch) { return; }
  var url = region.getAttribute("data-live-url");
  var last = null;

  function nextDelay() {
    var marker = region.querySelector("[data-poll-ms]");
    var ms = marker ? parseInt(marker.getAttribute("data-poll-ms"), 10) : 5000;
    return isNaN(ms) || ms < 500 ? 5000 : ms;
  }

  function schedule(ms) { window.setTimeout(tick, ms); }

  function tick() {
    if (document.hidden) { schedule(nextDelay()); return; }
    fetch(url, {
      credentials: "same-origin",
      redirect: "manual",
      headers: { "Accept": "text/html", "X-Requested-With": "fetch" }
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (html) {
      if (html !== last) {
        last = html;
        region.innerHTML = html;
      }
      region.setAttribute("data-updated", new Date().toISOString());
      schedule(nextDelay());
    }).catch(function () {
      // logged out, server restarting, network gone: ask again later, without hammering
      schedule(15000);
    });
  }

  schedule(nextDelay());
}());
