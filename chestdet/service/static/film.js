// The film: which boxes are shown, drawing them, their heatmaps and findings list, and editing them.

import { $, MIN_SIDE, buildClassSelect, call, chip, form, state, svg } from "./state.js";

export function edited(b) {
  return b.origin === null || b.classId !== b.origin.classId || b.box.some((v, i) => Math.abs(v - b.origin.box[i]) > 0.5);
}

export function visibleBoxes() {
  // The model's best boxes at their class's threshold, at most max_boxes (a deleted one keeps its place, so
  // deleting never brings up another), then every box the reviewer moved, relabelled or drew.
  const limit = state.model ? state.model.max_boxes : 100;
  const ranked = state.boxes.filter((b) => b.origin !== null && b.score >= state.thresholds.get(b.origin.classId))
    .sort((a, b) => b.score - a.score).slice(0, limit);
  const shown = new Set(ranked.filter((b) => !b.deleted));
  for (const b of state.boxes) if (!b.deleted && edited(b)) shown.add(b);
  return [...shown];
}

export function verdict(b) {
  if (b.origin === null) return "drawn";
  if (b.deleted) return "deleted";
  if (b.classId !== b.origin.classId) return "relabelled";
  return edited(b) ? "moved" : "accepted";
}

export function render() {
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

export function deleteBox(id) {
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

export function onPointerDown(event) {
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

export function onPointerMove(event) {
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

export function onPointerUp() {
  const drag = state.drag;
  state.drag = null;
  if (drag && drag.drawn) {
    const [x0, y0, x1, y1] = drag.box.box;
    if (x1 - x0 < MIN_SIDE || y1 - y0 < MIN_SIDE) state.boxes = state.boxes.filter((b) => b !== drag.box);
    setDrawing(false);
  }
  render();
}

export function setDrawing(on) {
  state.drawing = on;
  $("#draw").setAttribute("aria-pressed", String(on));
  $("#overlay").classList.toggle("drawing", on);
}

