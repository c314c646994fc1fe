// The review page: upload a film, see the model's boxes at the sensitivity chosen per class, look at a
// box's Grad-CAM evidence, correct the boxes and save the review. Plain DOM in ES modules, no build
// step, no CDN; every URL is relative, so the page works behind a reverse proxy's path prefix.

import { $, CUSTOM, buildClassSelect, call, chip, form, state } from "./state.js";
import { deleteBox, onPointerDown, onPointerMove, onPointerUp, render, setDrawing, verdict,
  visibleBoxes } from "./film.js";

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

// ---------------------------------------------------------------- opening a film

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

// ---------------------------------------------------------------- wiring

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
