// The control plane page: live refresh of server-rendered parts, and the
// write actions through the same API the CLI uses (bearer token from the
// field in the header, kept for this tab only).
(function () {
  "use strict";
  var $ = function (s) { return document.querySelector(s); };
  var token = $("#token");
  if (token) {
    token.value = sessionStorage.getItem("griddle-token") || "";
    token.addEventListener("input", function () { sessionStorage.setItem("griddle-token", token.value); });
  }
  function headers(extra) {
    var h = Object.assign({ "X-Griddle-Author": "page" }, extra || {});
    if (token && token.value) h["Authorization"] = "Bearer " + token.value;
    return h;
  }
  function call(method, url, body, extra) {
    return fetch(url, { method: method, body: body, headers: headers(extra) }).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = JSON.parse(t); } catch (e) { }
        return { ok: r.ok, status: r.status, body: j };
      });
    });
  }
  function errText(r) {
    if (!r.body) return "HTTP " + r.status;
    return r.body.error + (r.body.code ? " [" + r.body.code + "]" : "");
  }
  function show(el, ok, text) { el.hidden = false; el.className = "result " + (ok ? "ok" : "err"); el.textContent = text; }
  // A message survives the reload that follows a write.
  var flash = $("#flash");
  if (flash && sessionStorage.getItem("griddle-flash")) {
    var f = JSON.parse(sessionStorage.getItem("griddle-flash"));
    sessionStorage.removeItem("griddle-flash");
    show(flash, f.ok, f.text);
  }
  function done(ok, text) {
    if (!ok) { show(flash, false, text); return; }
    sessionStorage.setItem("griddle-flash", JSON.stringify({ ok: true, text: text }));
    location.reload();
  }

  // The editor applies only on the revision it was loaded at; say so when
  // the rules moved on (a canary step, another operator).
  function staleCheck() {
    var ed = $("#editor"), cur = $("#live-revision"), note = $("#stale");
    if (!ed || !cur || !note) return;
    var stale = cur.dataset.revision !== ed.dataset.revision;
    note.hidden = !stale;
    if (stale) note.textContent = "The rules are now at revision " + cur.dataset.revision + "; you are editing revision " +
      ed.dataset.revision + ". Apply would be refused as stale: reload to edit the current text.";
  }
  var live = $("#live");
  if (live) {
    setInterval(function () {
      fetch(live.dataset.src).then(function (r) { return r.ok ? r.text() : null; })
        .then(function (h) { if (h !== null) { live.innerHTML = h; staleCheck(); } }).catch(function () { });
    }, +live.dataset.every || 2000);
  }

  var ed = $("#editor");
  if (ed) {
    var svc = ed.dataset.service, res = $("#edit-result");
    $("#validate").onclick = function () {
      call("POST", "/v1/rules/" + svc + "/validate", ed.value).then(function (r) {
        show(res, r.ok, r.ok ? "valid" : errText(r));
      });
    };
    $("#diff").onclick = function () {
      call("POST", "/v1/rules/" + svc + "/diff", ed.value).then(function (r) {
        show(res, r.ok, r.ok ? (r.body.diff || "no changes") : errText(r));
      });
    };
    $("#dry-run").onclick = function () {
      call("POST", "/v1/rules/" + svc + "/dry-run", ed.value).then(function (r) {
        show(res, r.ok, r.ok ? r.body.text : errText(r));
      });
    };
    $("#apply").onclick = function () {
      call("PUT", "/v1/rules/" + svc, ed.value, { "If-Match": '"' + ed.dataset.revision + '"' }).then(function (r) {
        if (!r.ok) { show(res, false, errText(r)); return; }
        done(true, r.body.unchanged ? "unchanged: already revision " + r.body.revision
          : "applied revision " + r.body.revision + " (replacing " + r.body.previous + ")");
      });
    };
  }

  // Buttons that call the API: data-method, data-url, optional data-confirm, data-revision.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-url]");
    if (!b) return;
    ev.preventDefault();
    if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
    var extra = b.dataset.revision ? { "If-Match": '"' + b.dataset.revision + '"' } : {};
    call(b.dataset.method || "POST", b.dataset.url, null, extra).then(function (r) {
      done(r.ok, r.ok ? (b.dataset.done || "done") : errText(r));
    });
  });

  var cf = $("#canary-form");
  if (cf) {
    cf.onsubmit = function (ev) {
      ev.preventDefault();
      var fd = new FormData(cf);
      var spec = {
        service: cf.dataset.service, to: fd.get("to"), from: fd.get("from") || "",
        steps: String(fd.get("steps")).split(",").map(function (s) { return parseInt(s, 10); }),
        interval: fd.get("interval"), maxErrorRate: parseFloat(fd.get("maxErrorRate")) / 100,
        minRequests: parseInt(fd.get("minRequests"), 10) || 0
      };
      if (fd.get("maxP99")) spec.maxP99 = fd.get("maxP99");
      call("POST", "/v1/canaries/" + cf.dataset.service, JSON.stringify(spec), { "Content-Type": "application/json" }).then(function (r) {
        done(r.ok, r.ok ? "canary started: " + spec.from + " → " + spec.to : errText(r));
      });
    };
  }
})();
