// The fleet dashboard: follows /dashboard/events (server-sent events: the
// recent history once, then one sample a second) and draws the tiles and an
// SVG chart of backlog, desired and actual instances. No libraries.
"use strict";

(function () {
  // The chart spans the history it has, from one minute up to five.
  const MIN_WINDOW_MS = 60 * 1000;
  const MAX_WINDOW_MS = 5 * 60 * 1000;
  const MAX_SAMPLES = 300;
  const SVG = "http://www.w3.org/2000/svg";
  const SHOWN_ACTIONS = 10;
  let samples = [];

  const $ = (id) => document.getElementById(id);
  const setText = (id, value) => {
    $(id).textContent = value;
  };
  const num = (value) => (value === null || value === undefined ? "–" : String(value));

  function connect() {
    const source = new EventSource("/dashboard/events");
    source.addEventListener("open", () => connection("live", "live"));
    source.addEventListener("error", () => connection("lost", "reconnecting…"));
    source.addEventListener("history", (event) => {
      const data = JSON.parse(event.data);
      samples = data.samples.slice(-MAX_SAMPLES);
      if (data.live) render(data.live);
      draw();
    });
    source.addEventListener("live", (event) => {
      const live = JSON.parse(event.data);
      const last = samples[samples.length - 1];
      if (!last || last.at_ms < live.sample.at_ms) {
        samples.push(live.sample);
        if (samples.length > MAX_SAMPLES) samples.shift();
      }
      render(live);
      draw();
    });
  }

  function connection(state, text) {
    $("connection").className = "connection " + state;
    setText("connection-text", text);
  }

  function actualOf(sample) {
    return sample.instances ? sample.instances.running + sample.instances.pending : null;
  }

  function render(live) {
    const s = live.sample;
    setText("updated", new Date(s.at_ms).toLocaleTimeString());
    setText("backlog", s.visible + s.in_flight);
    setText("visible", s.visible);
    setText("in-flight", s.in_flight);
    setText("dead-letters", s.dead_letters);
    setText("throughput", s.results_per_s.toFixed(1));
    setText("done", s.done);
    setText("failed", s.failed);
    setText("waiting", s.waiting);
    setText("p50", s.latency_ms ? s.latency_ms.p50.toFixed(0) : "–");
    setText("p95", s.latency_ms ? s.latency_ms.p95.toFixed(0) : "–");
    setText("actual", num(actualOf(s)));
    const i = s.instances || {};
    setText("running", num(i.running));
    setText("pending", num(i.pending));
    setText("draining", num(i.draining));
    setText("desired", num(s.desired));

    const queueError = $("queue-error");
    queueError.hidden = !live.queue_error;
    queueError.textContent = live.queue_error ? "queue: " + live.queue_error : "";

    const c = live.controller;
    $("no-controller").hidden = !!c;
    if (!c) return;
    setText("limits", c.limits.min + "–" + c.limits.max + (c.dry_run ? " (dry run)" : ""));
    setText("reason", (c.last_plan && c.last_plan.decision.reason) || "–");
    setText("plan", c.last_plan_text || "–");
    setText("policy-path", c.policy.path);
    setText("reloads", c.policy.reloads);
    setText("policy-errors", c.activity.policy_errors);
    const policyError = $("policy-error");
    policyError.hidden = !c.policy.error_text;
    policyError.textContent = c.policy.error_text
      ? c.policy.error_text + "\nThe last good policy stays in charge."
      : "";
    $("policy-ok").hidden = !!c.policy.error_text;
    const tickError = $("tick-error");
    tickError.hidden = !c.last_error;
    tickError.textContent = c.last_error ? "last tick failed: " + c.last_error : "";
    renderActions(c.activity.recent);
  }

  function renderActions(recent) {
    const list = $("actions");
    list.replaceChildren();
    if (!recent.length) {
      const none = document.createElement("li");
      none.className = "muted";
      none.textContent = "none yet";
      list.append(none);
      return;
    }
    for (const action of recent.slice(-SHOWN_ACTIONS).reverse()) {
      const item = document.createElement("li");
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(action.at_ms).toLocaleTimeString();
      const what = document.createElement("span");
      what.className = action.action;
      what.textContent = action.action + " " + action.instances;
      item.append(when, what, " → desired " + action.desired);
      if (action.reason) item.append(" · " + action.reason);
      list.append(item);
    }
  }

  // A round ceiling for an axis whose half is a whole number too:
  // 4, 10, 20, 40, 100, 200, 400, ...
  function niceMax(value) {
    if (value <= 4) return 4;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 4, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  function node(tag, attributes, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function draw() {
    const svg = $("chart");
    svg.replaceChildren();
    // As many units as pixels, so the labels keep their size on a phone.
    const shown = Math.round(svg.getBoundingClientRect().width) || 640;
    const total = Math.max(320, shown);
    svg.setAttribute("viewBox", "0 0 " + total + " 260");
    const left = 40, right = total - 8, width = right - left;
    const panels = [
      { top: 12, bottom: 118, title: "backlog" },
      { top: 146, bottom: 236, title: "instances" },
    ];
    const now = samples.length ? samples[samples.length - 1].at_ms : Date.now();
    const span = samples.length ? now - samples[0].at_ms : 0;
    const windowMs = Math.min(MAX_WINDOW_MS, Math.max(MIN_WINDOW_MS, span));
    const x = (t) => left + ((t - (now - windowMs)) / windowMs) * width;
    const visible = samples.filter((s) => s.at_ms >= now - windowMs);

    const backlogs = visible.map((s) => s.visible + s.in_flight);
    const actuals = visible.map(actualOf);
    const desireds = visible.map((s) => s.desired);
    const maxOf = (values) => values.reduce((m, v) => (v === null ? m : Math.max(m, v)), 0);
    svg.dataset.samples = String(visible.length);
    svg.dataset.maxBacklog = String(maxOf(backlogs));
    svg.dataset.maxActual = String(maxOf(actuals));
    svg.dataset.maxDesired = String(maxOf(desireds));

    const scales = [niceMax(maxOf(backlogs)), niceMax(Math.max(maxOf(actuals), maxOf(desireds)))];
    panels.forEach((panel, index) => {
      const max = scales[index];
      for (const fraction of [0, 0.5, 1]) {
        const y = panel.bottom - fraction * (panel.bottom - panel.top);
        svg.append(node("line", { x1: left, x2: right, y1: y, y2: y, class: "grid" }));
        svg.append(node("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, String(Math.round(max * fraction))));
      }
      svg.append(node("text", { x: left + 4, y: panel.top - 2 }, panel.title));
    });
    const minutes = windowMs / 60000;
    const since = minutes >= 1.95 ? Math.round(minutes) + " min" : Math.round(windowMs / 1000) + " s";
    svg.append(node("text", { x: left, y: 254 }, "−" + since));
    svg.append(node("text", { x: right, y: 254, "text-anchor": "end" }, "now"));

    const y = (panel, max, value) => panel.bottom - (value / max) * (panel.bottom - panel.top);
    // Backlog: a line over a shaded area.
    const backlogPoints = visible.map((s, i) => [x(s.at_ms), y(panels[0], scales[0], backlogs[i])]);
    if (backlogPoints.length) {
      const first = backlogPoints[0][0], last = backlogPoints[backlogPoints.length - 1][0];
      const area = [[first, panels[0].bottom], ...backlogPoints, [last, panels[0].bottom]];
      svg.append(node("polygon", { class: "backlog-area", points: pointList(area) }));
      svg.append(node("polyline", { id: "line-backlog", class: "backlog", points: pointList(backlogPoints) }));
    }
    // Instances change in steps: draw them as steps.
    for (const [values, name] of [[actuals, "actual"], [desireds, "desired"]]) {
      const points = [];
      visible.forEach((s, i) => {
        if (values[i] === null || values[i] === undefined) return;
        const py = y(panels[1], scales[1], values[i]);
        if (points.length) points.push([x(s.at_ms), points[points.length - 1][1]]);
        points.push([x(s.at_ms), py]);
      });
      if (points.length) {
        svg.append(node("polyline", { id: "line-" + name, class: name, points: pointList(points) }));
      }
    }
  }

  function pointList(points) {
    return points.map(([px, py]) => px.toFixed(1) + "," + py.toFixed(1)).join(" ");
  }

  window.addEventListener("resize", draw);
  draw();
  connect();
})();
