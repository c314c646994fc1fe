// What the page holds, how it talks to the server, and small DOM helpers.

export const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
export const CUSTOM = "custom";
export const MIN_SIDE = 4; // pixels: a drawn box smaller than this is a click, not a box

export const state = {
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

export async function call(path, options = {}) {
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

export function form(fields) {
  const body = new FormData();
  body.append("file", state.file);
  for (const [name, value] of Object.entries(fields)) body.append(name, JSON.stringify(value));
  return body;
}

export function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

export function chip(colour) {
  const element = document.createElement("span");
  element.className = "chip";
  element.style.background = colour;
  return element;
}

export function buildClassSelect(element, selected) {
  element.replaceChildren(...[...state.classes.values()].map((item) => new Option(item.name, item.id)));
  element.value = String(selected);
}

