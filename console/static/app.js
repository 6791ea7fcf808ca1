// jetsaga console: keeps pages current without reloading them. A page whose
// <main> has data-live listens to the server's events about its saga and
// fetches itself again when the saga changes; data-refresh fetches it every
// so many seconds. Only <main> is replaced, so the scroll position and open
// details stay where they are when possible.
(function () {
  "use strict";
  let source = null;
  let timer = null;
  let busy = false;

  function openDetails(main) {
    const open = new Set();
    main.querySelectorAll("details[open]").forEach(function (d, i) { open.add(i); });
    return open;
  }

  async function refresh() {
    if (busy) { return; }
    busy = true;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (!r.ok) { return; }
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const next = doc.querySelector("main");
      const main = document.querySelector("main");
      if (!next || !main) { return; }
      const open = openDetails(main);
      next.querySelectorAll("details").forEach(function (d, i) { if (open.has(i)) { d.open = true; } });
      main.replaceWith(next);
      document.title = doc.title;
      setup();
    } catch (e) {
      // The next event or tick tries again.
    } finally {
      busy = false;
    }
  }

  function setup() {
    const main = document.querySelector("main");
    if (!main) { return; }
    const live = main.dataset.live;
    if (live && !source) {
      source = new EventSource(live);
      source.addEventListener("change", refresh);
      source.addEventListener("end", function () {
        source.close();
        source = null;
        refresh();
      });
    } else if (!live && source) {
      source.close();
      source = null;
    }
    const every = parseInt(main.dataset.refresh || "0", 10);
    if (timer) { clearTimeout(timer); timer = null; }
    if (every > 0) {
      timer = setTimeout(function () {
        if (document.visibilityState === "visible" && !document.activeElement.matches("input, select, textarea")) {
          refresh();
        } else {
          setup();
        }
      }, every * 1000);
    }
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
