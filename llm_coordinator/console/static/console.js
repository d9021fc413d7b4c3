// Atelier console: the live plant view and operator e-stop table (server-sent events) and
// work-order progress. No inline script anywhere (the Content-Security-Policy forbids it): a
// page's data comes in <script type="application/json" id="page-data" data-page="...">, and
// the session's CSRF token in <meta name="csrf-token">.
"use strict";
(function () {
  const RUN = new Set(["STARTING", "EXECUTE", "UNHOLDING", "UNSUSPENDING", "COMPLETING"]);
  const FAULT = new Set(["ABORTING", "ABORTED"]);
  const lamp = (s) => (RUN.has(s) ? "st-run" : FAULT.has(s) ? "st-fault" : s === "IDLE" ? "st-idle" : "st-wait");
  const deg = (r) => (r * 180 / Math.PI).toFixed(0);
  const badge = (s) => "badge st-" + s.toLowerCase().replace(/[^a-z0-9]/g, "-");

  function setText(el, text) { if (el && el.textContent !== text) el.textContent = text; }

  function livePlant(initial) {
    const svg = document.querySelector("svg.topview");
    const k = parseFloat(svg.dataset.pxPerM), m0 = parseFloat(svg.dataset.marginPx), hM = parseFloat(svg.dataset.heightM);
    const X = (x) => m0 + x * k, Y = (y) => m0 + (hM - y) * k;

    function apply(s) {
      window.atelierLast = s;  // tests read the newest snapshot seen by the page
      setText(document.getElementById("plant-time"), s.time_s.toFixed(1) + " s");
      for (const m of s.machines) {
        const g = document.getElementById("m-" + m.name);
        if (g) g.setAttribute("class", "machine " + (m.fault_code ? "st-fault" : lamp(m.state)));
        setText(document.getElementById("m-" + m.name + "-state"), m.state + (m.fault_code ? " · fault " + m.fault_code : ""));
        const row = document.getElementById("mrow-" + m.name);
        if (!row) continue;
        const b = row.querySelector('[data-f="state"]');
        setText(b, m.state); b.className = badge(m.fault_code ? "aborted" : m.state);
        setText(row.querySelector('[data-f="cycle_count"]'), String(m.cycle_count));
        setText(row.querySelector('[data-f="part_count"]'), String(m.part_count));
        setText(row.querySelector('[data-f="door"]'), m.door_closed === null ? "–" : m.door_closed ? "closed" : "OPEN");
        setText(row.querySelector('[data-f="fault"]'), m.fault_code ? m.fault_code + ": " + m.fault_text : "–");
      }
      for (const r of s.robots) {
        const g = document.getElementById("r-" + r.name);
        if (g) {
          g.setAttribute("class", "robot" + (r.estop ? " estop" : r.safety === "protective_stop" ? " stop" : ""));
          const tool = document.getElementById("r-" + r.name + "-tool"), arm = document.getElementById("r-" + r.name + "-arm");
          const tx = X(r.tool_xyz_m[0]).toFixed(1), ty = Y(r.tool_xyz_m[1]).toFixed(1);
          tool.setAttribute("cx", tx); tool.setAttribute("cy", ty); arm.setAttribute("x2", tx); arm.setAttribute("y2", ty);
          setText(document.getElementById("r-" + r.name + "-skill"), r.estop ? "E-STOP" : (r.skill || "idle"));
        }
        const row = document.getElementById("rrow-" + r.name);
        if (!row) continue;
        setText(row.querySelector('[data-f="skill"]'), r.skill || "idle");
        const b = row.querySelector('[data-f="safety"]');
        const st = r.estop ? "estop" : r.safety;
        setText(b, r.estop ? "E-STOP" : r.safety.replace(/_/g, " ")); b.className = badge(st);
        setText(row.querySelector('[data-f="estop_reason"]'), r.estop ? r.estop_reason : "");
        setText(row.querySelector('[data-f="joints"]'), r.joints_rad.map(deg).join(" "));
      }
      for (const p of s.people) {
        const g = document.getElementById("p-" + p.name);
        if (g) g.setAttribute("transform", "translate(" + X(p.x_m).toFixed(1) + " " + Y(p.y_m).toFixed(1) + ")");
        const li = document.getElementById("prow-" + p.name);
        if (li) setText(li.querySelector('[data-f="where"]'), "at (" + p.x_m.toFixed(1) + ", " + p.y_m.toFixed(1) + ") m, " + p.speed_m_s.toFixed(1) + " m/s");
      }
      for (const part of s.parts) {
        const r = document.getElementById("part-" + part.name);
        if (r) { r.setAttribute("x", (X(part.xyz_m[0]) - 3.5).toFixed(1)); r.setAttribute("y", (Y(part.xyz_m[1]) - 3.5).toFixed(1)); }
      }
      document.body.dataset.seq = String(s.seq);
    }

    if (initial) apply(initial);
    follow(apply, "/plant");
  }

  // Follow the plant stream: call apply with every snapshot; keep #live-dot / #live-text
  // saying whether data arrives; go to the login page when the session ends.
  function follow(apply, page) {
    const dot = document.getElementById("live-dot"), liveText = document.getElementById("live-text");
    const show = (on, text) => { if (dot) dot.className = on ? "dot on" : "dot off"; setText(liveText, text); };
    let lastWall = 0;
    const es = new EventSource("/api/plant/stream");
    es.addEventListener("plant", (ev) => { lastWall = Date.now(); apply(JSON.parse(ev.data)); });
    es.addEventListener("logout", () => { es.close(); window.location = "/login?next=" + encodeURIComponent(page); });
    es.onopen = () => show(true, "live");
    es.onerror = () => show(false, "reconnecting…");
    setInterval(() => {
      if (lastWall && Date.now() - lastWall > 2000) show(false, "no data for " + ((Date.now() - lastWall) / 1000).toFixed(0) + " s");
      else if (lastWall) show(true, "live");
    }, 1000);
    return es;
  }

  // The operator page's e-stop table: latch, reason, safety state and skill of every robot.
  // A row's buttons (trip, or reset for an operator) are swapped from the row's <template>s
  // only when its latch changes, so a reset form being filled in is left alone otherwise.
  function liveEstops(initial) {
    function apply(s) {
      window.atelierLast = s;  // tests read the newest snapshot seen by the page
      for (const r of s.robots) {
        const row = document.getElementById("estop-" + r.name);
        if (!row) continue;
        setText(row.querySelector('[data-f="skill"]'), r.skill || "idle");
        const cell = row.querySelector('[data-f="state"]');
        const key = JSON.stringify([r.estop, r.estop ? r.estop_reason : "", r.safety]);
        if (cell.dataset.key !== key) {
          const b = document.createElement("span");
          b.className = r.estop ? "badge st-estop" : badge(r.safety);
          b.textContent = r.estop ? "E-STOP latched" : r.safety.replace(/_/g, " ");
          const parts = [b];
          if (r.estop) {
            const why = document.createElement("div");
            why.className = "small fault"; why.textContent = r.estop_reason;
            parts.push(why);
          }
          cell.replaceChildren(...parts);
          cell.dataset.key = key;
        }
        const latched = r.estop ? "yes" : "no";
        if (row.dataset.latched !== latched) {
          const tpl = row.querySelector('template[data-when="' + latched + '"]');
          row.querySelector('[data-f="actions"]').replaceChildren(tpl.content.cloneNode(true));
          row.dataset.latched = latched;
        }
      }
      document.body.dataset.seq = String(s.seq);
    }

    if (initial) apply(initial);
    follow(apply, "/operator");
  }

  function followJob(id, states) {
    const order = states.filter((s) => s !== "failed");
    async function poll() {
      let job;
      try {
        const r = await fetch("/api/work-orders/" + encodeURIComponent(id), { credentials: "same-origin" });
        if (!r.ok) { setTimeout(poll, 2000); return; }
        job = await r.json();
      } catch (e) { setTimeout(poll, 2000); return; }
      const st = document.getElementById("job-state");
      setText(st, job.state.replace(/_/g, " ")); st.className = badge(job.state);
      const at = order.indexOf(job.state);
      document.querySelectorAll("#stages li").forEach((li, i) => {
        li.className = job.state === "failed" ? (i === 0 ? "failed" : "") : i < at ? "done" : i === at ? (job.state === "awaiting_approval" ? "done" : "now") : "";
      });
      setText(document.getElementById("job-error"), job.error || "");
      const ul = document.getElementById("job-messages");
      if (ul.children.length !== job.messages.length) {
        ul.replaceChildren(...job.messages.map((m) => { const li = document.createElement("li"); li.textContent = m; return li; }));
      }
      if (job.plan_id && !document.getElementById("open-plan")) {
        const a = document.createElement("a");
        a.href = "/plans/" + encodeURIComponent(job.plan_id); a.className = "primary button"; a.id = "open-plan";
        a.textContent = "Open plan #" + job.plan_id;
        document.getElementById("job-plan").replaceChildren(a);
      }
      if (job.state !== "awaiting_approval" && job.state !== "failed") setTimeout(poll, 400);
    }
    poll();
  }

  function localTimes() {
    document.querySelectorAll(".when[data-t]").forEach((el) => {
      const t = parseFloat(el.dataset.t);
      if (!isNaN(t)) el.textContent = new Date(t * 1000).toLocaleString();
    });
  }

  function recipeParams() {
    const sel = document.getElementById("wo-recipe");
    if (!sel) return;
    const show = () => document.querySelectorAll("fieldset.params").forEach((f) => { f.hidden = f.dataset.recipe !== sel.value; });
    sel.addEventListener("change", show); show();
  }

  // The session's CSRF token, for fetch() (header X-CSRF-Token) and forms (field csrf_token).
  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  // A form a page adds without the token field gets it when submitted (the server refuses
  // changes without it; the templates' own forms carry it already).
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    if (form.querySelector('input[name="csrf_token"]') || !csrf()) return;
    const input = document.createElement("input");
    input.type = "hidden"; input.name = "csrf_token"; input.value = csrf();
    form.appendChild(input);
  }, true);

  const PAGES = {
    plant: (data) => livePlant(data),
    operator: (data) => liveEstops(data),
    job: (data) => followJob(data.id, data.states),
  };

  function startPage() {
    const el = document.getElementById("page-data");
    if (!el || !PAGES[el.dataset.page]) return;
    PAGES[el.dataset.page](JSON.parse(el.textContent));
  }

  function backLinks() {
    document.querySelectorAll("a[data-back]").forEach((a) => a.addEventListener("click", (ev) => {
      if (window.history.length > 1) { ev.preventDefault(); window.history.back(); }
    }));
  }

  document.addEventListener("DOMContentLoaded", () => { localTimes(); recipeParams(); backLinks(); startPage(); });
  window.atelier = { livePlant, liveEstops, followJob, csrf };
})();
