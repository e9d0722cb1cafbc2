// Tenant detection console. No framework, no build step, nothing fetched from elsewhere.
// Every string from the server is shown as text (textContent, canvas fillText, Option),
// never parsed as HTML; the page's Content-Security-Policy forbids inline script anyway.
"use strict";

(() => {
  const KEY = "yoloserve.apiKey";
  const $ = (id) => document.getElementById(id);
  const state = {
    models: [],
    file: null,
    bitmap: null,
    busy: false,
    again: false,
    seenClasses: new Set(),
  };

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const key = sessionStorage.getItem(KEY) || "";
    const headers = Object.assign({}, options.headers || {}, { Authorization: "Bearer " + key });
    let response;
    try {
      response = await fetch(path, Object.assign({}, options, {
        headers, cache: "no-store", credentials: "omit",
      }));
    } catch (err) {
      throw new ApiError(0, "the server could not be reached; check your connection");
    }
    const type = response.headers.get("content-type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const message = body && body.error && body.error.message
        ? body.error.message : "request failed with HTTP " + response.status;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  function show(el, message) {
    el.textContent = message || "";
    el.hidden = !message;
  }

  function setState(value) {
    document.body.dataset.state = value;
  }

  // --------------------------------------------------------------- sign in

  async function signIn(key) {
    sessionStorage.setItem(KEY, key);
    show($("sign-in-error"), "");
    setState("signing-in");
    let catalog;
    try {
      catalog = await api("/v1/models");
    } catch (err) {
      sessionStorage.removeItem(KEY);
      const prefix = err.status === 401 ? "That API key was not accepted: " : "";
      show($("sign-in-error"), prefix + err.message);
      setState("signed-out");
      return;
    }
    state.models = catalog.models || [];
    fillModels();
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    setState("idle");
    fillVersionModels();
    await Promise.all([loadPolicy(), loadUsage(), loadVersions()]);
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    window.location.reload();
  }

  // ---------------------------------------------------------------- models

  function fillModels() {
    const select = $("model");
    select.replaceChildren();
    for (const model of state.models) {
      const option = new Option(model.name, model.name, model.default, model.default);
      select.add(option);
    }
    fillVersions();
  }

  function fillVersions() {
    const model = state.models.find((m) => m.name === $("model").value);
    const select = $("version");
    select.replaceChildren(new Option("active", "", true, true));
    for (const version of (model ? model.versions : [])) {
      const label = version === model.active_version ? version + " (active)" : String(version);
      select.add(new Option(label, String(version)));
    }
  }

  // ---------------------------------------------------------------- policy

  function setSlider(id, value, bounds) {
    const input = $(id);
    if (bounds) {
      input.min = String(bounds[0]);
      input.max = String(bounds[1]);
    }
    input.value = String(value);
    $(id + "-value").textContent = Number(input.value).toFixed(2);
  }

  async function loadPolicy() {
    try {
      const view = await api("/v1/policy");
      setSlider("conf", view.defaults.conf, view.bounds.conf);
      setSlider("iou", view.defaults.iou, view.bounds.iou);
      for (const name of view.allowed_classes || []) state.seenClasses.add(name);
      fillClassNames();
    } catch (err) {
      show($("detect-error"), err.message);
    }
  }

  async function saveDefaults() {
    const body = { conf: Number($("conf").value), iou: Number($("iou").value) };
    $("save-status").textContent = "Saving…";
    try {
      const view = await api("/v1/policy", {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      $("save-status").textContent = "Saved: confidence " + view.defaults.conf.toFixed(2)
        + ", IoU " + view.defaults.iou.toFixed(2) + " are now your defaults";
    } catch (err) {
      $("save-status").textContent = "Not saved: " + err.message;
    }
  }

  // ------------------------------------------------------------- detection

  function query() {
    const params = new URLSearchParams();
    if ($("model").value) params.set("model", $("model").value);
    if ($("version").value) params.set("version", $("version").value);
    params.set("conf", $("conf").value);
    params.set("iou", $("iou").value);
    const classes = $("classes").value.trim();
    if (classes) params.set("classes", classes);
    return params.toString();
  }

  async function pickFile(file) {
    if (!file) return;
    state.file = file;
    try {
      state.bitmap = await createImageBitmap(file);
    } catch (err) {
      state.bitmap = null;  // the server says why (its 4xx names the fix)
    }
    await detect();
  }

  async function detect() {
    if (!state.file) return;
    if (state.busy) {  // one request at a time; run once more with the latest settings
      state.again = true;
      return;
    }
    state.busy = true;
    setState("busy");
    show($("detect-error"), "");
    const started = performance.now();
    const sent = query();
    try {
      const result = await api("/v1/detect?" + sent, {
        method: "POST",
        headers: { "Content-Type": state.file.type || "application/octet-stream" },
        body: state.file,
      });
      render(result, performance.now() - started);
    } catch (err) {
      clearResult();
      show($("detect-error"), err.message);
    } finally {
      state.busy = false;
      document.body.dataset.lastQuery = sent;  // what the picture shows (for tests, too)
      if (state.again) {
        state.again = false;
        detect();
      } else {
        setState("idle");
      }
    }
  }

  function clearResult() {
    const canvas = $("canvas");
    canvas.width = 0;
    canvas.height = 0;
    canvas.dataset.boxes = "0";
    $("detections").tBodies[0].replaceChildren();
    $("timing").textContent = "";
  }

  function render(result, roundTripMs) {
    drawBoxes(result);
    fillTable(result.detections);
    for (const det of result.detections) state.seenClasses.add(det.class_name);
    fillClassNames();
    const timing = result.timing_ms || {};
    $("timing").textContent = result.detections.length + " detections by " + result.model
      + " · inference " + fmt(timing.inference) + " ms · server " + fmt(timing.total)
      + " ms · round trip " + fmt(roundTripMs) + " ms";
  }

  function fmt(ms) {
    return typeof ms === "number" ? ms.toFixed(1) : "–";
  }

  const COLORS = ["#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231",
                  "#48f90a", "#92cc17", "#3ddb86", "#00bcd4", "#0055d1"];

  function drawBoxes(result) {
    const canvas = $("canvas");
    const ctx = canvas.getContext("2d");
    const width = result.image.width;
    const height = result.image.height;
    const scale = Math.min(1, 960 / width);
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    if (state.bitmap) {
      ctx.drawImage(state.bitmap, 0, 0, canvas.width, canvas.height);
    } else {
      ctx.fillStyle = "#eaeef2";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    ctx.lineWidth = 2;
    ctx.font = "14px system-ui, sans-serif";
    ctx.textBaseline = "top";
    let drawn = 0;
    for (const det of result.detections) {
      const [x1, y1, x2, y2] = det.bbox.map((v) => v * scale);
      const color = COLORS[det.class_id % COLORS.length];
      ctx.strokeStyle = color;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = det.class_name + " " + det.confidence.toFixed(2);  // drawn, not parsed
      const textWidth = ctx.measureText(label).width;
      const top = y1 >= 18 ? y1 - 18 : y1;
      ctx.fillStyle = color;
      ctx.fillRect(x1, top, textWidth + 6, 18);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(label, x1 + 3, top + 2);
      drawn += 1;
    }
    canvas.dataset.boxes = String(drawn);
  }

  function fillTable(detections) {
    const rows = detections.map((det, i) => {
      const row = document.createElement("tr");
      const cells = [String(i + 1), det.class_name, det.confidence.toFixed(3),
                     det.bbox.map((v) => v.toFixed(1)).join(", ")];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    });
    $("detections").tBodies[0].replaceChildren(...rows);
  }

  function fillClassNames() {
    const list = $("class-names");
    list.replaceChildren(...[...state.seenClasses].sort().map((name) => new Option(name)));
  }

  // -------------------------------------------------------- model versions
  // The Models panel: the chosen model's versions (the operator's and the tenant's own
  // uploads), their validation and rollout, and the tenant's actions on them. While a
  // version validates or a rollout runs, the table refreshes itself.

  let versionsTimer = 0;

  function modelPath() {
    return "/v1/models/" + encodeURIComponent($("versions-model").value);
  }

  function fillVersionModels() {
    const select = $("versions-model");
    const chosen = select.value;
    select.replaceChildren();
    for (const model of state.models) {
      select.add(new Option(model.name, model.name, false, model.name === chosen));
    }
  }

  async function refreshCatalog() {
    let catalog;
    try {
      catalog = await api("/v1/models");
    } catch (err) {
      show($("models-error"), err.message);
      return;
    }
    state.models = catalog.models || [];
    const chosen = $("model").value;
    fillModels();
    $("model").value = chosen;
    fillVersions();
  }

  function rolloutText(rollout) {
    if (!rollout) return "–";
    let text = rollout.mode + " " + rollout.percent + "% · " + rollout.state;
    if (rollout.agreement !== null) {
      text += " · agreement " + rollout.agreement.toFixed(3) + " over " + rollout.images
        + " · p95 " + fmt(rollout.p95_ms.candidate) + " ms (incumbent "
        + fmt(rollout.p95_ms.incumbent) + " ms)";
    }
    return rollout.reason ? text + " · " + rollout.reason : text;
  }

  function validationText(record) {
    const m = record.metrics || {};
    if (record.origin === "operator") return "pushed by your operator";
    const parts = [];
    if (typeof m.latency_ms === "number") parts.push("latency " + m.latency_ms.toFixed(1) + " ms");
    if (typeof m.load_s === "number") parts.push("load " + m.load_s.toFixed(2) + " s");
    if (typeof m.map50 === "number") parts.push("mAP50 " + m.map50.toFixed(3));
    if (record.reason) parts.push(record.reason);
    return parts.join(" · ") || "–";
  }

  function actionButton(label, action, version) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.dataset.action = action;
    button.dataset.version = String(version);
    return button;
  }

  async function loadVersions() {
    clearTimeout(versionsTimer);
    if (!$("versions-model").value) return;
    let listing;
    try {
      listing = await api(modelPath() + "/versions");
    } catch (err) {
      show($("models-error"), err.message);
      return;
    }
    show($("models-error"), "");
    const rows = listing.versions.map((record) => {
      const row = document.createElement("tr");
      row.dataset.version = String(record.version);
      row.dataset.status = record.status;
      row.dataset.rollout = record.rollout ? record.rollout.state : "";
      const active = record.version === listing.active_version;
      const cells = [String(record.version) + (active ? " (active)" : ""),
                     record.status, validationText(record), rolloutText(record.rollout)];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      const actions = document.createElement("td");
      if (record.status === "ready" && !active) {
        actions.append(actionButton("Roll out", "rollout", record.version),
                       actionButton("Activate", "activate", record.version));
      }
      if (record.origin === "upload" && !active) {
        actions.append(actionButton("Delete", "delete", record.version));
      }
      row.append(actions);
      return row;
    });
    $("versions").tBodies[0].replaceChildren(...rows);
    $("versions").dataset.active = String(listing.active_version);
    // the detect panel's picker follows (a promotion by the gate, a version now ready)
    const known = state.models.find((m) => m.name === listing.name);
    if (known) {
      known.versions = listing.versions.filter((r) => r.status === "ready").map((r) => r.version);
      known.active_version = listing.active_version;
      if ($("model").value === listing.name) {
        const chosen = $("version").value;
        fillVersions();
        $("version").value = chosen;
      }
    }
    const pending = listing.versions.some((r) => r.status === "validating"
      || (r.rollout && r.rollout.state === "running"));
    if (pending) versionsTimer = setTimeout(loadVersions, 1500);
  }

  async function versionAction(action, version) {
    const path = modelPath() + "/versions/" + version;
    $("models-status").textContent = "Working…";
    try {
      if (action === "rollout") {
        const body = {
          mode: $("rollout-mode").value,
          percent: Number($("rollout-percent").value),
          min_images: Number($("rollout-images").value),
          min_agreement: Number($("rollout-agreement").value),
        };
        await api(path + "/rollout", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        $("models-status").textContent = "Version " + version + " is rolling out";
      } else if (action === "activate") {
        await api(path + "/activate", { method: "POST" });
        $("models-status").textContent = "Version " + version + " is active";
      } else if (action === "delete") {
        await api(path, { method: "DELETE" });
        $("models-status").textContent = "Version " + version + " deleted";
      }
      show($("models-error"), "");
    } catch (err) {
      $("models-status").textContent = "";
      show($("models-error"), err.message);
    }
    await refreshCatalog();
    await loadVersions();
  }

  async function rollback() {
    try {
      const model = await api(modelPath() + "/rollback", { method: "POST" });
      $("models-status").textContent = "Rolled back: version " + model.active_version + " is active";
      show($("models-error"), "");
    } catch (err) {
      show($("models-error"), err.message);
    }
    await refreshCatalog();
    await loadVersions();
  }

  async function uploadVersion(event) {
    event.preventDefault();
    const file = $("upload-weights").files[0];
    if (!file) return;
    const manifest = {
      class_names: $("upload-classes").value.split(",").map((n) => n.trim()).filter(Boolean),
      imgsz: Number($("upload-imgsz").value),
    };
    const arch = $("upload-arch").value.trim();
    if (arch) manifest.architecture = arch;
    const form = new FormData();
    form.append("weights", file);
    form.append("manifest", JSON.stringify(manifest));
    $("models-status").textContent = "Uploading…";
    try {
      const accepted = await api(modelPath() + "/versions", { method: "POST", body: form });
      $("models-status").textContent = "Version " + accepted.version + " uploaded: validating";
      show($("models-error"), "");
    } catch (err) {
      $("models-status").textContent = "";
      show($("models-error"), err.message);
    }
    await loadVersions();
  }

  // ----------------------------------------------------------------- usage

  async function loadUsage() {
    show($("usage-error"), "");
    let report;
    try {
      report = await api("/v1/usage");
    } catch (err) {
      show($("usage-error"), err.message);
      return;
    }
    $("usage-images").textContent = String(report.images_this_month);
    $("usage-remaining").textContent = report.remaining === null
      ? "no monthly limit" : report.remaining + " of " + report.monthly_quota;
    drawUsage(report.hours || []);
  }

  function hourKey(date) {
    return date.toISOString().slice(0, 13);  // YYYY-MM-DDTHH, UTC, as the server keys hours
  }

  function drawUsage(hours) {
    const byHour = new Map(hours.map((h) => [h.hour, h.images]));
    const now = new Date();
    const slots = [];
    for (let i = 23; i >= 0; i -= 1) {
      const key = hourKey(new Date(now.getTime() - i * 3600 * 1000));
      slots.push({ key, images: byHour.get(key) || 0 });
    }
    const canvas = $("usage-chart");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const peak = Math.max(1, ...slots.map((s) => s.images));
    const base = canvas.height - 18;
    const barWidth = canvas.width / slots.length;
    ctx.fillStyle = "#0969da";
    slots.forEach((slot, i) => {
      const h = Math.round((slot.images / peak) * (base - 14));
      ctx.fillRect(i * barWidth + 2, base - h, barWidth - 4, h);
    });
    ctx.fillStyle = "#57606a";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(slots[0].key.slice(11) + ":00", 2, base + 4);
    ctx.fillText("now", canvas.width - 24, base + 4);
    ctx.fillText("peak " + peak, 2, 0);
    canvas.dataset.images = String(slots.reduce((sum, s) => sum + s.images, 0));
  }

  // ----------------------------------------------------------------- wiring

  function debounce(fn, ms) {
    let timer = 0;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function wire() {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      $("api-key").value = "";
      if (key) signIn(key);
    });
    $("sign-out").addEventListener("click", signOut);
    $("model").addEventListener("change", () => { fillVersions(); detect(); });
    $("version").addEventListener("change", detect);
    const rerun = debounce(detect, 250);
    for (const id of ["conf", "iou"]) {
      $(id).addEventListener("input", () => {
        $(id + "-value").textContent = Number($(id).value).toFixed(2);
        rerun();
      });
    }
    $("classes").addEventListener("change", detect);
    $("save-defaults").addEventListener("click", saveDefaults);
    $("usage-refresh").addEventListener("click", loadUsage);
    $("versions-model").addEventListener("change", loadVersions);
    $("versions-refresh").addEventListener("click", loadVersions);
    $("rollback").addEventListener("click", rollback);
    $("upload-form").addEventListener("submit", uploadVersion);
    $("versions").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button) versionAction(button.dataset.action, button.dataset.version);
    });
    $("file").addEventListener("change", (event) => pickFile(event.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      pickFile(event.dataTransfer.files[0]);
    });
    const saved = sessionStorage.getItem(KEY);
    if (saved) signIn(saved);
  }

  document.addEventListener("DOMContentLoaded", wire);
})();
