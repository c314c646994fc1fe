// The review page: upload a film, see the model's boxes at the sensitivity chosen per class, look at a
// box's Grad-CAM evidence, correct the boxes and save the review. Plain DOM, no build step, no CDN;
// every URL is relative, so the page works behind a reverse proxy's path prefix.
"use strict";

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
const CUSTOM = "custom";
const MIN_SIDE = 4; // pixels: a drawn box smaller than this is a click, not a box

const state = {
  model: null, // GET api/v1/model
  classes: new Map(), // id -> {id, name, colour, operating_points}
  thresholds: new Map(), // class id -> minimum score shown
  presets: new Map(), // class id -> point name or CUSTOM
  file: null,
  image: null, // {sha256, width, height, format}
  boxes: [], // {id, classId, box, score, origin: {classId, box, score} | null, deleted}
  nextId: 1,
  selected: null,
  explained: new Map(), // box id -> {key, url}
  showing: new Set(), // box ids whose heatmap is shown
  drawing: false,
  drag: null,
};

// ---------------------------------------------------------------- the server

function authHeaders() {
  const token = sessionStorage.getItem("chestdet-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("#token-panel").hidden = false;
    throw new Error("this server wants an access token");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response;
}

function form(fields) {
  const body = new FormData();
  body.append("file", state.file);
  for (const [name, value] of Object.entries(fields)) body.append(name, JSON.stringify(value));
  return body;
}

async function loadModel() {
  try {
    state.model = await (await call("api/v1/model")).json();
  } catch (error) {
    $("#model-status").textContent = `Model not available: ${error.message}`;
    setTimeout(loadModel, 2000);
    return;
  }
  const info = state.model.model;
  $("#model-status").textContent = `Model ${info.version} (${info.backend}); explanations ${state.model.explain}.`;
  for (const item of state.model.classes) {
    state.classes.set(item.id, item);
    state.thresholds.set(item.id, item.threshold);
    state.presets.set(item.id, state.model.operating_points.default && pointOf(item, state.model.operating_points.default) !== null
      ? state.model.operating_points.default : CUSTOM);
  }
  buildSensitivity();
  buildClassSelect($("#draw-class"), state.model.classes[0].id);
}

// ---------------------------------------------------------------- sensitivity

function pointOf(item, name) {
  const point = item.operating_points[name];
  return point && point.threshold !== null ? point.threshold : null;
}

function pointLabel(name, point) {
  const sensitivity = point.sensitivity === null ? "" : `, sensitivity ${point.sensitivity.toFixed(2)}`;
  return `${name} (${point.threshold.toFixed(3)}${sensitivity})`;
}

function buildSensitivity() {
  const points = state.model.operating_points.points;
  const all = $("#preset-all");
  all.replaceChildren(new Option("custom", CUSTOM), ...points.map((name) => new Option(name, name)));
  all.value = state.model.operating_points.default || CUSTOM;
  all.addEventListener("change", () => {
    for (const item of state.classes.values()) setPreset(item.id, all.value);
    syncSensitivity();
    render();
  });
  const body = $("#classes tbody");
  body.replaceChildren();
  for (const item of state.classes.values()) {
    const row = body.insertRow();
    row.dataset.classId = item.id;
    row.dataset.testid = `class-${item.name}`;
    row.insertCell().append(chip(item.colour), item.name);
    const select = document.createElement("select");
    select.dataset.testid = `preset-${item.name}`;
    select.append(new Option("custom", CUSTOM));
    for (const name of points) {
      const point = item.operating_points[name];
      if (point && point.threshold !== null) select.append(new Option(pointLabel(name, point), name));
    }
    select.addEventListener("change", () => { setPreset(item.id, select.value); syncSensitivity(); render(); });
    row.insertCell().append(select);
    const slider = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 1, step: 0.001 });
    slider.dataset.testid = `slider-${item.name}`;
    slider.setAttribute("aria-label", `Minimum score for ${item.name}`);
    const value = document.createElement("output");
    slider.addEventListener("input", () => {
      state.thresholds.set(item.id, Number(slider.value));
      state.presets.set(item.id, CUSTOM);
      syncSensitivity();
      render();
    });
    row.insertCell().append(slider, value);
    const shown = row.insertCell();
    shown.dataset.testid = `shown-${item.name}`;
  }
  syncSensitivity();
}

function setPreset(classId, name) {
  state.presets.set(classId, name);
  if (name === CUSTOM) return;
  const threshold = pointOf(state.classes.get(classId), name);
  state.thresholds.set(classId, threshold === null ? state.model.operating_points.min_score : threshold);
}

function syncSensitivity() {
  for (const row of $("#classes tbody").rows) {
    const classId = Number(row.dataset.classId);
    const threshold = state.thresholds.get(classId);
    const select = row.querySelector("select");
    select.value = [...select.options].some((o) => o.value === state.presets.get(classId)) ? state.presets.get(classId) : CUSTOM;
    row.querySelector("input").value = threshold;
    row.querySelector("output").textContent = threshold.toFixed(3);
  }
}

// ---------------------------------------------------------------- the film and its boxes

async function openFile(file) {
  state.file = file;
  state.boxes = [];
  state.selected = null;
  state.explained.clear();
  state.showing.clear();
  $("#image-status").textContent = `Detecting on ${file.name}…`;
  $("#save-status").textContent = "";
  try {
    const result = await (await call("api/v1/detect?preview=true", { method: "POST", body: form({}) })).json();
    state.image = result.image;
    for (const d of result.detections) {
      const box = { classId: d.class_id, box: d.box.slice(), score: d.score };
      state.boxes.push({ id: state.nextId++, ...box, origin: { ...box, box: d.box.slice() }, deleted: false });
    }
    const film = $("#film");
    film.src = result.preview;
    await film.decode();
    $("#overlay").setAttribute("viewBox", `0 0 ${state.image.width} ${state.image.height}`);
    $("#stage").hidden = false;
    $("#save").disabled = false;
    $("#image-status").textContent = `${file.name}: ${state.image.width}×${state.image.height} ${state.image.format}, `
      + `${result.detections.length} boxes scoring at least ${result.floor_score}.`;
  } catch (error) {
    $("#image-status").textContent = `${file.name}: ${error.message}`;
    $("#stage").hidden = true;
    $("#save").disabled = true;
  }
  render();
}

function edited(b) {
  return b.origin === null || b.classId !== b.origin.classId || b.box.some((v, i) => Math.abs(v - b.origin.box[i]) > 0.5);
}

function visibleBoxes() {
  // The model's best boxes at their class's threshold, at most max_boxes (a deleted one keeps its place, so
  // deleting never brings up another), then every box the reviewer moved, relabelled or drew.
  const limit = state.model ? state.model.max_boxes : 100;
  const ranked = state.boxes.filter((b) => b.origin !== null && b.score >= state.thresholds.get(b.origin.classId))
    .sort((a, b) => b.score - a.score).slice(0, limit);
  const shown = new Set(ranked.filter((b) => !b.deleted));
  for (const b of state.boxes) if (!b.deleted && edited(b)) shown.add(b);
  return [...shown];
}

function verdict(b) {
  if (b.origin === null) return "drawn";
  if (b.deleted) return "deleted";
  if (b.classId !== b.origin.classId) return "relabelled";
  return edited(b) ? "moved" : "accepted";
}

function render() {
  const visible = visibleBoxes();
  renderBoxes(visible);
  renderHeatmaps(visible);
  renderFindings(visible);
  $("[data-testid=finding-count]").textContent = String(visible.length);
  for (const row of $("#classes tbody").rows) {
    const classId = Number(row.dataset.classId);
    row.cells[3].textContent = String(visible.filter((b) => b.classId === classId).length);
  }
}

function renderBoxes(visible) {
  const layer = $("#boxes");
  layer.replaceChildren();
  if (!state.image) return;
  const scale = state.image.width / Math.max(1, $("#film").clientWidth || state.image.width);
  const onTop = [...visible.filter((b) => b.id !== state.selected), ...visible.filter((b) => b.id === state.selected)];
  for (const b of onTop) {
    const item = state.classes.get(b.classId);
    const [x0, y0, x1, y1] = b.box;
    const group = svg("g", { class: `box${b.id === state.selected ? " selected" : ""}`, "data-testid": `box-${b.id}` });
    group.dataset.boxId = b.id;
    group.append(svg("rect", { class: "frame", x: x0, y: y0, width: x1 - x0, height: y1 - y0, stroke: item.colour }));
    const label = svg("text", { x: x0 + 4 * scale, y: Math.max(y0 - 4 * scale, 14 * scale), fill: item.colour,
      "font-size": 14 * scale });
    label.textContent = b.origin === null ? item.name : `${item.name} ${b.score.toFixed(2)}`;
    group.append(label);
    if (b.id === state.selected) {
      const size = 10 * scale;
      for (const [corner, x, y] of [["nw", x0, y0], ["ne", x1, y0], ["sw", x0, y1], ["se", x1, y1]]) {
        group.append(svg("rect", { class: `handle ${corner}`, x: x - size / 2, y: y - size / 2, width: size, height: size,
          "data-corner": corner }));
      }
    }
    layer.append(group);
  }
}

function renderHeatmaps(visible) {
  const layer = $("#heatmaps");
  layer.replaceChildren();
  for (const b of visible) {
    const explained = state.explained.get(b.id);
    if (!state.showing.has(b.id) || !explained || explained.key !== boxKey(b)) continue;
    layer.append(svg("image", { href: explained.url, x: 0, y: 0, width: state.image.width, height: state.image.height,
      preserveAspectRatio: "none", "data-testid": `heatmap-${b.id}` }));
  }
}

function renderFindings(visible) {
  const body = $("#findings tbody");
  body.replaceChildren();
  for (const b of visible) {
    const row = body.insertRow();
    row.dataset.testid = `finding-${b.id}`;
    row.classList.toggle("selected", b.id === state.selected);
    row.addEventListener("click", (event) => { if (event.target === row || event.target.tagName === "TD") selectBox(b.id); });
    const classSelect = document.createElement("select");
    classSelect.dataset.testid = `class-of-${b.id}`;
    buildClassSelect(classSelect, b.classId);
    classSelect.addEventListener("change", () => { b.classId = Number(classSelect.value); classSelect.blur(); render(); });
    row.insertCell().append(chip(state.classes.get(b.classId).colour), classSelect);
    row.insertCell().textContent = b.origin === null ? "drawn" : b.score.toFixed(3);
    row.insertCell().textContent = verdict(b);
    const toggle = Object.assign(document.createElement("input"), { type: "checkbox", checked: state.showing.has(b.id) });
    toggle.dataset.testid = `explain-${b.id}`;
    toggle.setAttribute("aria-label", "Show the Grad-CAM evidence of this box");
    toggle.addEventListener("change", () => explain(b, toggle));
    const evidence = document.createElement("label");
    evidence.append(toggle, " Grad-CAM");
    row.insertCell().append(evidence);
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete" });
    remove.dataset.testid = `delete-${b.id}`;
    remove.addEventListener("click", () => deleteBox(b.id));
    row.insertCell().append(remove);
  }
}

// ---------------------------------------------------------------- explanations

function boxKey(b) {
  return `${b.classId}:${b.box.map((v) => v.toFixed(1)).join(",")}`;
}

async function explain(b, toggle) {
  if (!toggle.checked) {
    state.showing.delete(b.id);
    render();
    return;
  }
  state.showing.add(b.id);
  const key = boxKey(b);
  if (state.explained.get(b.id)?.key !== key) {
    toggle.disabled = true;
    $("#image-status").textContent = "Computing the explanation…";
    try {
      const boxes = [{ class: state.classes.get(b.classId).name, box: b.box, score: b.origin ? b.score : 1.0 }];
      const result = await (await call("api/v1/explain", { method: "POST", body: form({ boxes }) })).json();
      const map = result.boxes[0];
      if (!map.heatmap) throw new Error("no anchor of the model fits this box");
      state.explained.set(b.id, { key, url: map.heatmap });
      $("#image-status").textContent = `Grad-CAM of the ${state.classes.get(b.classId).name} box (pyramid level ${map.level}).`;
    } catch (error) {
      state.showing.delete(b.id);
      $("#image-status").textContent = `No explanation: ${error.message}`;
    }
  }
  render();
}

// ---------------------------------------------------------------- editing

function selectBox(id) {
  state.selected = id;
  render();
}

function deleteBox(id) {
  const b = state.boxes.find((x) => x.id === id);
  if (!b) return;
  if (b.origin === null) state.boxes = state.boxes.filter((x) => x.id !== id);
  else b.deleted = true;
  state.showing.delete(id);
  if (state.selected === id) state.selected = null;
  render();
}

function imagePoint(event) {
  const rect = $("#overlay").getBoundingClientRect();
  const x = (event.clientX - rect.left) * state.image.width / rect.width;
  const y = (event.clientY - rect.top) * state.image.height / rect.height;
  return [Math.min(Math.max(x, 0), state.image.width), Math.min(Math.max(y, 0), state.image.height)];
}

function onPointerDown(event) {
  if (!state.image) return;
  const point = imagePoint(event);
  const group = event.target.closest(".box");
  if (state.drawing && !event.target.dataset.corner) {
    const b = { id: state.nextId++, classId: Number($("#draw-class").value), box: [...point, ...point], score: 1,
      origin: null, deleted: false };
    state.boxes.push(b);
    state.selected = b.id;
    state.drag = { box: b, anchor: point, drawn: true };
  } else if (group) {
    const b = state.boxes.find((x) => x.id === Number(group.dataset.boxId));
    state.selected = b.id;
    const corner = event.target.dataset.corner;
    state.drag = corner ? { box: b, anchor: opposite(b.box, corner) } : { box: b, start: point, before: b.box.slice() };
  } else {
    state.selected = null;
  }
  if (state.drag) $("#overlay").setPointerCapture(event.pointerId);
  render();
  event.preventDefault();
}

function onPointerMove(event) {
  const drag = state.drag;
  if (!drag) return;
  const [x, y] = imagePoint(event);
  if (drag.anchor) { // drawing, or resizing from a corner: the opposite corner stays
    const [ax, ay] = drag.anchor;
    drag.box.box = [Math.min(ax, x), Math.min(ay, y), Math.max(ax, x), Math.max(ay, y)];
  } else { // moving, kept inside the image
    const [x0, y0, x1, y1] = drag.before;
    const left = Math.min(Math.max(x0 + x - drag.start[0], 0), state.image.width - (x1 - x0));
    const top = Math.min(Math.max(y0 + y - drag.start[1], 0), state.image.height - (y1 - y0));
    drag.box.box = [left, top, left + x1 - x0, top + y1 - y0];
  }
  render();
}

function opposite(box, corner) {
  return [corner.includes("w") ? box[2] : box[0], corner.includes("n") ? box[3] : box[1]];
}

function onPointerUp() {
  const drag = state.drag;
  state.drag = null;
  if (drag && drag.drawn) {
    const [x0, y0, x1, y1] = drag.box.box;
    if (x1 - x0 < MIN_SIDE || y1 - y0 < MIN_SIDE) state.boxes = state.boxes.filter((b) => b !== drag.box);
    setDrawing(false);
  }
  render();
}

function setDrawing(on) {
  state.drawing = on;
  $("#draw").setAttribute("aria-pressed", String(on));
  $("#overlay").classList.toggle("drawing", on);
}

// ---------------------------------------------------------------- saving

async function save() {
  const reviewer = $("#reviewer").value.trim();
  if (!reviewer) {
    $("#save-status").textContent = "Give the reviewer's name first.";
    $("#reviewer").focus();
    return;
  }
  const visible = new Set(visibleBoxes());
  const reviewed = state.boxes.filter((b) => visible.has(b) || (b.deleted && b.origin !== null));
  const name = (id) => state.classes.get(id).name;
  const review = {
    reviewer,
    operating_point: $("#preset-all").value === CUSTOM ? null : $("#preset-all").value,
    boxes: reviewed.map((b) => ({
      verdict: verdict(b), class: name(b.classId), box: b.box.map((v) => Math.round(v * 100) / 100),
      original: b.origin === null ? null : { class: name(b.origin.classId), box: b.origin.box, score: b.origin.score },
    })),
  };
  $("#save").disabled = true;
  try {
    const result = await (await call("api/v1/feedback", { method: "POST", body: form({ review }) })).json();
    $("#save-status").textContent = `Saved: ${result.boxes} boxes for training${result.replaced ? " (replacing an earlier review)" : ""}; `
      + `image ${result.sha256.slice(0, 12)}.`;
  } catch (error) {
    $("#save-status").textContent = `Not saved: ${error.message}`;
  } finally {
    $("#save").disabled = false;
  }
}

// ---------------------------------------------------------------- small helpers and wiring

function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

function chip(colour) {
  const element = document.createElement("span");
  element.className = "chip";
  element.style.background = colour;
  return element;
}

function buildClassSelect(element, selected) {
  element.replaceChildren(...[...state.classes.values()].map((item) => new Option(item.name, item.id)));
  element.value = String(selected);
}

function wire() {
  $("#file").addEventListener("change", () => { if ($("#file").files[0]) openFile($("#file").files[0]); });
  const drop = $("#drop");
  const viewer = $("#viewer");
  viewer.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  viewer.addEventListener("dragleave", () => drop.classList.remove("over"));
  viewer.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) openFile(event.dataTransfer.files[0]);
  });
  const overlay = $("#overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  overlay.addEventListener("pointerup", onPointerUp);
  overlay.addEventListener("pointercancel", onPointerUp);
  $("#draw").addEventListener("click", () => setDrawing(!state.drawing));
  $("#save").addEventListener("click", save);
  $("#token-panel").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("chestdet-token", $("#token").value.trim());
    $("#token-panel").hidden = true;
    loadModel();
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (!typing && state.selected !== null && (event.key === "Delete" || event.key === "Backspace")) {
      deleteBox(state.selected);
      event.preventDefault();
    }
    if (event.key === "Escape") setDrawing(false);
  });
  window.addEventListener("resize", render);
}

wire();
loadModel();
