// Warden web app — the only script: live updates and small conveniences.
// It never builds HTML from event data: it only inserts fragments the server rendered (and
// escaped) for this user, fetched from the same origin. No inline scripts exist (strict CSP).
"use strict";

(function () {
  var page = document.body.getAttribute("data-page");

  // Confirmation for destructive forms (data-confirm="...").
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    var msg = f && f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  });

  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok || r.redirected) { throw new Error("fetch " + url + ": " + r.status); }
        return r.text();
      });
  }

  // Parses a server-rendered fragment into nodes (template content never runs scripts).
  function parse(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  // Arrived from another site (a Slack or Teams link) while signed in: the Strict session cookie
  // was not sent. Retry once as a same-site navigation, which carries it.
  var login = document.getElementById("login");
  if (page === "login" && login && /(^|;\s*)warden_hint=1/.test(document.cookie)) {
    var last = Number(window.sessionStorage.getItem("warden_retry") || 0);
    var next = login.getAttribute("data-next") || "/reviews";
    if (Date.now() - last > 10000 && next.charAt(0) === "/" && next.charAt(1) !== "/") {
      window.sessionStorage.setItem("warden_retry", String(Date.now()));
      window.location.replace(next);
      return;
    }
  }

  var handlers = [];
  function onReview(fn) { handlers.push(fn); }

  function connect() {
    if (!window.EventSource || handlers.length === 0) { return; }
    var badge = document.getElementById("live-state");
    var es = new EventSource("/events");
    es.addEventListener("open", function () { if (badge) { badge.classList.add("on"); } });
    es.addEventListener("error", function () { if (badge) { badge.classList.remove("on"); } });
    es.addEventListener("review", function (ev) {
      var data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      handlers.forEach(function (fn) { fn(data); });
    });
    es.addEventListener("resync", function () {
      handlers.forEach(function (fn) { fn(null); });
    });
  }

  // --- Access request list: insert new rows, update changed ones -------------------------
  var table = document.getElementById("reviews");
  if (page === "reviews" && table) {
    var tbody = table.tBodies[0];
    var want = {
      status: (table.getAttribute("data-status") || "").toUpperCase(),
      connection: table.getAttribute("data-connection") || "",
      requester: table.getAttribute("data-requester") || "",
      page: table.getAttribute("data-page") || "1"
    };
    var matches = function (tr) {
      if (want.status && want.status !== "ALL" && tr.getAttribute("data-status") !== want.status) { return false; }
      if (want.connection && tr.getAttribute("data-connection") !== want.connection) { return false; }
      if (want.requester && tr.getAttribute("data-requester") !== want.requester) { return false; }
      return true;
    };
    onReview(function (data) {
      if (!data) { return; }
      fetchHtml("/reviews/" + encodeURIComponent(data.id) + "/row").then(function (html) {
        var tr = parse(html).querySelector("tr");
        if (!tr) { return; }
        var existing = tbody.querySelector('tr[data-id="' + CSS.escape(data.id) + '"]');
        tr.classList.add("fresh");
        if (existing) {
          existing.replaceWith(tr);
        } else if (matches(tr) && want.page === "1") {
          var empty = tbody.querySelector("tr.empty");
          if (empty) { empty.remove(); }
          tbody.insertBefore(tr, tbody.firstChild);
          var count = document.getElementById("total-count");
          var n = count ? parseInt(count.textContent, 10) : NaN;
          if (count && !isNaN(n)) { count.textContent = String(n + 1); }
        }
      }).catch(function () {});
    });
  }

  // --- Access request detail: refresh status, approvals, timeline, result ----------------
  var review = document.getElementById("review");
  if (page === "review" && review) {
    var id = review.getAttribute("data-id");
    var refresh = function () {
      fetchHtml("/reviews/" + encodeURIComponent(id) + "/live").then(function (html) {
        var frag = parse(html);
        var live = frag.querySelector("#review-live");
        var actions = frag.querySelector("#review-actions");
        var status = live && live.querySelector("#review-status");
        var newStatus = status ? status.textContent.trim() : "";
        if (live) { document.getElementById("review-live").replaceWith(live); }
        // Decision forms only change with the status (keeps a half-typed reason otherwise).
        if (actions && newStatus && newStatus !== review.getAttribute("data-status")) {
          document.getElementById("review-actions").replaceWith(actions);
          review.setAttribute("data-status", newStatus);
        }
      }).catch(function () {});
    };
    onReview(function (data) { if (!data || data.id === id) { refresh(); } });
    // Fallback for decisions made on another gateway replica.
    setInterval(function () {
      var s = review.getAttribute("data-status");
      if (s === "PENDING" || s === "APPROVED") { refresh(); }
    }, 15000);
  }

  // --- Terminal: follow a held command until its result arrives ---------------------------
  var outcome = document.getElementById("terminal-outcome");
  if (page === "terminal" && outcome && outcome.getAttribute("data-waiting") === "1") {
    var rid = outcome.getAttribute("data-review-id");
    var done = false;
    var poll = function () {
      if (done) { return; }
      fetchHtml("/terminal/reviews/" + encodeURIComponent(rid)).then(function (html) {
        var next = parse(html).querySelector("#terminal-outcome");
        if (!next) { return; }
        document.getElementById("terminal-outcome").replaceWith(next);
        if (next.getAttribute("data-waiting") !== "1") { done = true; }
      }).catch(function () {});
    };
    onReview(function (data) { if (!data || data.id === rid) { poll(); } });
    setInterval(poll, 3000);
  }

  connect();
})();
