// Atelier console: live plans and alarms. Follows /api/live/stream on the pages that carry
// <ul id="live-banner" data-live-plan="ID">: the alarm banner (machines in alarm or fault,
// e-stops, safety stops, paused plans), the plan page's step statuses and progress, and the
// steps running now (#current-steps on the plant and operator pages). No inline script and no
// HTML from the server's data: text only (the console's Content-Security-Policy).
(function () {
  "use strict";
  const banner = document.getElementById("live-banner");
  if (!banner || !window.EventSource) return;
  const planId = banner.dataset.livePlan || "";
  const url = "/api/live/stream" + (planId ? "?plan=" + encodeURIComponent(planId) : "");

  const words = (s) => String(s).replace(/_/g, " ");
  const stateClass = (s) => "st-" + String(s).replace(/_/g, "-");

  function setText(el, t) {
    if (el && el.textContent !== t) el.textContent = t;
  }

  function setBadge(el, state) {
    if (!el) return;
    setText(el, words(state));
    const kept = el.className.split(/\s+/).filter((c) => c && !c.startsWith("st-"));
    el.className = kept.concat(stateClass(state)).join(" ");
  }

  function showAlarms(alarms) {
    banner.replaceChildren();
    banner.hidden = alarms.length === 0;
    for (const a of alarms) {
      const li = document.createElement("li");
      li.className = "alarm alarm-" + a.kind;
      li.textContent = "⚠ " + a.text;
      banner.appendChild(li);
    }
  }

  function showPlan(p) {
    if (!p) return;
    setBadge(document.getElementById("plan-state"), p.state);
    for (const s of p.steps) {
      const row = document.querySelector('#steps tr[data-step="' + CSS.escape(s.id) + '"]');
      if (row) setBadge(row.querySelector('[data-f="status"] .badge'), s.status);
    }
    const now = p.current.map((s) => s.id).join(", ");
    setText(
      document.getElementById("plan-progress"),
      p.done + " of " + p.total + " steps done" + (now ? " · running now: " + now : "")
    );
  }

  function showCurrent(plans) {
    const list = document.getElementById("current-steps");
    if (!list) return;
    list.replaceChildren();
    if (!plans.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No plan is running.";
      list.appendChild(li);
      return;
    }
    for (const p of plans) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/plans/" + encodeURIComponent(p.id);
      a.textContent = "plan " + p.id;
      li.appendChild(a);
      const now = p.current.map((s) => s.id + " (" + s.agent + ": " + s.skill + ")").join(", ");
      const line = " " + words(p.state) + ", " + p.done + "/" + p.total + " steps done" + (now ? "; now " + now : "");
      li.appendChild(document.createTextNode(line));
      list.appendChild(li);
    }
  }

  const es = new EventSource(url);
  es.addEventListener("live", (ev) => {
    const view = JSON.parse(ev.data);
    showAlarms(view.alarms || []);
    showPlan(view.plan);
    showCurrent(view.plans || []);
  });
  es.addEventListener("logout", () => {
    es.close();
    window.location.assign("/login");
  });
})();
