/* experiment-runner web UI: progressive enhancement only. Every page works without this script; with it,
   progress updates live and highlighted spans explain themselves on click or focus.
   It copies strings the server formatted into place (textContent) and never builds markup from data. */
(function () {
  "use strict";
  var POLL_MS = 1500;

  function field(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }

  function apply(root, data) {
    root.querySelectorAll("[data-field]").forEach(function (node) {
      var value = field(data, node.getAttribute("data-field"));
      if (value != null) { node.textContent = String(value); }
    });
    root.querySelectorAll("[data-segment]").forEach(function (node) {
      var width = field(data, "row.segments." + node.getAttribute("data-segment"));
      if (width != null) { node.style.width = width + "%"; }
    });
    root.querySelectorAll(".bar[data-field-label]").forEach(function (node) {
      var label = field(data, node.getAttribute("data-field-label"));
      if (label != null) { node.setAttribute("aria-label", label); }
    });
    root.querySelectorAll("[data-state-class]").forEach(function (node) {
      node.className = "state state-" + data.row.state;
    });
  }

  function poll(url, onData) {
    var timer = null;
    function tick() {
      var target = typeof url === "function" ? url() : url;
      if (!target) { return; }
      fetch(target, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && onData(data) !== false) { timer = setTimeout(tick, POLL_MS); } })
        .catch(function () { timer = setTimeout(tick, POLL_MS * 4); });
    }
    timer = setTimeout(tick, POLL_MS);
    return function () { clearTimeout(timer); };
  }

  function liveList(root) {
    /* Polls all the time: the open rows it shows, and (through `since`) any experiment created after the
       newest it shows or with items open. A row it lacks that is newer than the page means a run started
       since: the list is fetched again (the server's own markup, with the page's filters and sort). */
    var base = root.getAttribute("data-live-list");
    var refreshing = false;
    function openIds() {
      return Array.prototype.map.call(root.querySelectorAll("tr[data-open='1']"), function (tr) { return tr.getAttribute("data-id"); });
    }
    function refresh() {
      refreshing = true;
      fetch(window.location.href, {headers: {"Accept": "text/html"}, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var list = fresh.getElementById("experiment-list");
          if (!list) { return; }
          root.replaceChildren.apply(root, Array.prototype.map.call(list.childNodes, function (n) { return document.importNode(n, true); }));
          root.setAttribute("data-newest", list.getAttribute("data-newest") || "");
          var count = fresh.getElementById("count"), here = document.getElementById("count");
          if (count && here) { here.textContent = count.textContent; }
        })
        .catch(function () { /* the next poll tries again */ })
        .then(function () { refreshing = false; });
    }
    poll(function () {
      var query = ["since=" + encodeURIComponent(root.getAttribute("data-newest") || "")];
      return base + "?" + query.concat(openIds().map(function (id) { return "id=" + encodeURIComponent(id); })).join("&");
    }, function (data) {
      var newest = root.getAttribute("data-newest") || "";
      var started = false;
      data.rows.forEach(function (row) {
        var tr = root.querySelector("tr[data-id='" + CSS.escape(row.id) + "']");
        if (!tr) { started = started || row.created_at > newest; return; }
        apply(tr, {row: row});
        tr.setAttribute("data-open", row.open ? "1" : "0");
      });
      if (started && !refreshing) { refresh(); }
      return true;
    });
  }

  function liveExperiment(root) {
    if (root.getAttribute("data-open") !== "1") { return; }
    poll(root.getAttribute("data-live"), function (data) {
      apply(root, data);
      if (!data.row.open) {
        root.setAttribute("data-open", "0");
        var done = document.getElementById("finished");
        if (done) { done.hidden = false; }
        return false;
      }
      return true;
    });
  }

  function explainSpans() {
    var pop = document.getElementById("pop");
    if (!pop) { return; }
    var list = document.getElementById("item-list");
    document.querySelectorAll("mark.hl").forEach(function (mark) {
      mark.setAttribute("tabindex", "0");
      mark.setAttribute("aria-label", mark.textContent + " (" + mark.getAttribute("title") + ")");
    });
    var current = null;
    function clear() {
      document.querySelectorAll(".active, .focus").forEach(function (n) { n.classList.remove("active", "focus"); });
      pop.hidden = true;
      current = null;
    }
    function place(mark) {
      var box = mark.getBoundingClientRect();
      pop.style.left = Math.max(8, Math.min(box.left, window.innerWidth - Math.min(420, window.innerWidth * 0.9) - 8)) + "px";
      pop.style.top = (box.bottom + 6) + "px";
    }
    function show(mark) {
      clear();
      (mark.getAttribute("data-ann") || "").split(" ").forEach(function (id) {
        var entry = id && document.getElementById("ann-" + id);
        if (entry) { entry.classList.add("active"); }
      });
      mark.classList.add("focus");
      pop.textContent = mark.getAttribute("title");
      place(mark);
      pop.hidden = false;
      current = mark;
    }
    document.addEventListener("click", function (ev) {
      var mark = ev.target.closest && ev.target.closest("mark.hl");
      if (mark) { show(mark); } else { clear(); }
    });
    document.addEventListener("focusin", function (ev) {
      if (ev.target.matches && ev.target.matches("mark.hl")) { show(ev.target); }
    });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { clear(); } });
    window.addEventListener("scroll", function () { if (current) { place(current); } }, {passive: true});
    var toggle = document.getElementById("inline-labels");
    if (toggle && list) {
      var saved = null;
      try { saved = window.localStorage.getItem("er-inline-labels"); } catch (e) { /* storage off */ }
      if (saved === "0") { toggle.checked = false; list.classList.remove("inline-labels"); }
      toggle.addEventListener("change", function () {
        list.classList.toggle("inline-labels", toggle.checked);
        try { window.localStorage.setItem("er-inline-labels", toggle.checked ? "1" : "0"); } catch (e) { /* storage off */ }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.querySelector("[data-live-list]");
    if (list) { liveList(list); }
    var live = document.querySelector("[data-live]");
    if (live) { liveExperiment(live); }
    explainSpans();
  });
}());
