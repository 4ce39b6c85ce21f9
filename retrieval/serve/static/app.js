// retrieve's page: search by photo, browse with filters, more-like-these, duplicates, map.
// Plain JavaScript on the same server's API; nothing is loaded from anywhere else.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { query: null, liked: new Set(), disliked: new Set(), after: 0, mode: "browse" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.detail ? (typeof body.detail === "string" ? body.detail
    : body.detail.map((d) => d.msg).join("; ")) : `HTTP ${response.status}`);
  return body;
}

const status = (text) => { $("#status").textContent = text; };
const basename = (path) => path.split("/").pop();
const thumb = (id, size = 256) => `images/${id}/thumbnail?size=${size}`;

// ------------------------------------------------------------------ filters

function filterSpec() {
  const form = new FormData($("#filter-form"));
  const spec = {};
  const folder = form.get("folder").trim();
  if (folder) spec.folders = [folder];
  const tags = form.get("tags").split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) spec.tags = tags;
  if (form.get("since")) spec.since = form.get("since");
  if (form.get("until")) spec.until = form.get("until");
  const meta = {};
  for (const pair of form.get("meta").split(",").map((p) => p.trim()).filter(Boolean)) {
    const [key, ...rest] = pair.split("=");
    const value = rest.join("=");
    meta[key.trim()] = value !== "" && !isNaN(Number(value)) ? Number(value)
      : value === "true" ? true : value === "false" ? false : value;
  }
  if (Object.keys(meta).length) spec.metadata = meta;
  return spec;
}

function filterQuery(spec) {
  const params = new URLSearchParams();
  for (const folder of spec.folders || []) params.append("folder", folder);
  for (const tag of spec.tags || []) params.append("tag", tag);
  if (spec.since) params.set("since", spec.since);
  if (spec.until) params.set("until", spec.until);
  for (const [key, value] of Object.entries(spec.metadata || {})) params.append("meta", `${key}=${value}`);
  return params;
}

const k = () => Number(new FormData($("#filter-form")).get("k"));

// ------------------------------------------------------------------ the grid

function card(item, score) {
  const node = el("div", { class: "card", "data-id": item.id },
    el("img", { src: thumb(item.id), alt: basename(item.path), loading: "lazy", title: item.path,
                onclick: () => searchById(item.id) }),
    el("div", { class: "votes" },
      el("button", { class: "like", title: "More like this", "aria-label": "like", onclick: () => vote(item.id, "liked") }, "+"),
      el("button", { class: "dislike", title: "Less like this", "aria-label": "dislike", onclick: () => vote(item.id, "disliked") }, "\u2212")),
    el("div", { class: "meta" }, el("span", { class: "name" }, basename(item.path)),
      score === undefined ? "" : el("span", { class: "score" }, score.toFixed(3))));
  paintVote(node, item.id);
  return node;
}

function showResults(results, title) {
  const grid = $("#grid");
  grid.replaceChildren(...results.map((hit) => card(hit, hit.score)));
  $("#load-more").hidden = true;
  status(results.length ? title : "No results.");
}

// ------------------------------------------------------------------ searching

async function searchByFile(file) {
  if (!file || !file.type.startsWith("image/")) { status("That is not an image."); return; }
  const preview = $("#query-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  state.query = { file };
  await runQuery();
}

async function searchById(id) {
  const preview = $("#query-preview");
  preview.src = thumb(id, 128);
  preview.hidden = false;
  state.query = { id };
  await runQuery();
}

async function runQuery() {
  const spec = filterSpec();
  status("Searching\u2026");
  try {
    let body;
    if (state.query.file) {
      const form = new FormData();
      form.append("image", state.query.file);
      form.append("k", String(k()));
      form.append("filter", JSON.stringify(spec));
      body = await api("search/image", { method: "POST", body: form });
    } else {
      body = await api("search", { method: "POST", headers: { "Content-Type": "application/json" },
                                   body: JSON.stringify({ id: state.query.id, k: k(), filter: spec }) });
    }
    showResults(body.results, `${body.results.length} results in ${Math.round(body.took_ms)} ms`);
  } catch (error) { status(error.message); }
}

async function recommend() {
  status("Searching\u2026");
  try {
    const body = await api("recommend", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ liked: [...state.liked], disliked: [...state.disliked], k: k(), filter: filterSpec() }) });
    $("#query-preview").hidden = true;
    showResults(body.results, `${body.results.length} more like the ${state.liked.size} you picked`);
  } catch (error) { status(error.message); }
}

async function browse(more = false) {
  if (!more) state.after = 0;
  try {
    const params = filterQuery(filterSpec());
    params.set("after", state.after);
    params.set("limit", String(k()));
    const page = await api(`images?${params}`);
    const cards = page.images.map((image) => card(image));
    if (more) $("#grid").append(...cards); else $("#grid").replaceChildren(...cards);
    state.after = page.next_after;
    $("#load-more").hidden = page.next_after === null;
    status(`${page.total} images`);
  } catch (error) { status(error.message); }
}

// ------------------------------------------------------------------ likes and dislikes

function vote(id, kind) {
  const other = kind === "liked" ? "disliked" : "liked";
  state[other].delete(id);
  if (state[kind].has(id)) state[kind].delete(id); else state[kind].add(id);
  document.querySelectorAll(`.card[data-id="${id}"]`).forEach((node) => paintVote(node, id));
  const liked = state.liked.size, disliked = state.disliked.size;
  $("#selection").hidden = liked + disliked === 0;
  $("#selection-text").textContent = `${liked} liked, ${disliked} disliked`;
  $("#more-like").disabled = liked === 0;
}

function paintVote(node, id) {
  node.classList.toggle("liked", state.liked.has(id));
  node.classList.toggle("disliked", state.disliked.has(id));
}

// ------------------------------------------------------------------ duplicates

async function findDuplicates(event) {
  event?.preventDefault();
  const form = new FormData($("#dupes-form"));
  const params = new URLSearchParams({ threshold: form.get("threshold") });
  if (form.get("exact")) params.set("exact", "true");
  $("#dupes-status").textContent = "Looking for duplicates\u2026";
  try {
    const body = await api(`duplicates?${params}`);
    $("#dupes").replaceChildren(...body.groups.map((group, n) => el("div", { class: "group" },
      el("h3", {}, `Group ${n + 1}: ${group.exact ? "identical files" : `similarity ${group.score.toFixed(3)}`}`),
      el("div", { class: "row" }, ...group.images.map((image) => {
        const node = card(image);
        node.querySelector(".meta").replaceChildren(
          el("span", { class: "name", title: image.path }, basename(image.path)),
          el("span", {}, `${image.width ?? "?"}\u00d7${image.height ?? "?"}, ${(image.size / 1024).toFixed(0)} kB`));
        return node;
      })))));
    $("#dupes-status").textContent = `${body.groups.length} groups`;
  } catch (error) { $("#dupes-status").textContent = error.message; }
}

// ------------------------------------------------------------------ the map

const map = { points: [], images: new Map(), x: 0, y: 0, scale: 1, pointers: new Map(), loaded: false, moved: false };
const MAP_SIZE = 2000; // map units: points lie in [0, MAP_SIZE]^2

async function openMap() {
  const canvas = $("#map");
  resizeCanvas();
  if (!map.loaded) {
    const body = await api("map?limit=5000");
    map.points = body.points;
    map.loaded = true;
    const fit = Math.min(canvas.width, canvas.height) / (MAP_SIZE + 200);
    map.scale = fit;
    map.x = (canvas.width - MAP_SIZE * fit) / 2;
    map.y = (canvas.height - MAP_SIZE * fit) / 2;
  }
  drawMap();
}

function resizeCanvas() {
  const canvas = $("#map");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
}

function drawMap() {
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const side = Math.max(4, Math.min(128, 48 * map.scale * 2));
  for (const p of map.points) {
    const sx = map.x + p.x * MAP_SIZE * map.scale, sy = map.y + p.y * MAP_SIZE * map.scale;
    if (sx < -side || sy < -side || sx > canvas.width + side || sy > canvas.height + side) continue;
    if (side < 12) { ctx.fillStyle = "#8ab4f8"; ctx.fillRect(sx - 2, sy - 2, 4, 4); continue; }
    const image = mapImage(p.id, side > 64 ? 128 : 64);
    if (image.complete && image.naturalWidth) {
      const f = side / Math.max(image.naturalWidth, image.naturalHeight);
      ctx.drawImage(image, sx - image.naturalWidth * f / 2, sy - image.naturalHeight * f / 2,
                    image.naturalWidth * f, image.naturalHeight * f);
    } else { ctx.fillStyle = "#3c4043"; ctx.fillRect(sx - side / 2, sy - side / 2, side, side); }
  }
}

function mapImage(id, size) {
  const key = `${id}-${size}`;
  let image = map.images.get(key);
  if (!image) {
    image = new Image();
    image.onload = () => requestAnimationFrame(drawMap);
    image.src = thumb(id, size);
    map.images.set(key, image);
  }
  return image;
}

function zoomAt(cx, cy, factor) {
  const scale = Math.min(20, Math.max(0.05, map.scale * factor));
  map.x = cx - (cx - map.x) * (scale / map.scale);
  map.y = cy - (cy - map.y) * (scale / map.scale);
  map.scale = scale;
  drawMap();
}

function canvasPoint(event) {
  const rect = $("#map").getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
  return [(event.clientX - rect.left) * ratio, (event.clientY - rect.top) * ratio];
}

function setUpMap() {
  const canvas = $("#map");
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(...canvasPoint(event), Math.exp(-event.deltaY / 300));
  }, { passive: false });
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    map.pointers.set(event.pointerId, canvasPoint(event));
    map.moved = false;
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!map.pointers.has(event.pointerId)) return;
    const [x, y] = canvasPoint(event), [px, py] = map.pointers.get(event.pointerId);
    if (map.pointers.size === 2) { // pinch: zoom by the change of distance between the two fingers
      const [other] = [...map.pointers].filter(([id]) => id !== event.pointerId).map(([, p]) => p);
      const before = Math.hypot(px - other[0], py - other[1]), after = Math.hypot(x - other[0], y - other[1]);
      if (before > 0) zoomAt((x + other[0]) / 2, (y + other[1]) / 2, after / before);
    } else {
      map.x += x - px; map.y += y - py;
      drawMap();
    }
    if (Math.hypot(x - px, y - py) > 2) map.moved = true;
    map.pointers.set(event.pointerId, [x, y]);
  });
  const release = (event) => {
    const wasClick = map.pointers.size === 1 && !map.moved;
    map.pointers.delete(event.pointerId);
    if (wasClick && event.type === "pointerup") clickMap(...canvasPoint(event));
  };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  window.addEventListener("resize", () => { if (!$("#view-map").hidden) { resizeCanvas(); drawMap(); } });
}

function clickMap(cx, cy) {
  let best = null, bestDistance = Infinity;
  for (const p of map.points) {
    const d = Math.hypot(map.x + p.x * MAP_SIZE * map.scale - cx, map.y + p.y * MAP_SIZE * map.scale - cy);
    if (d < bestDistance) { best = p; bestDistance = d; }
  }
  if (best && bestDistance < Math.max(12, 48 * map.scale)) { show("search"); searchById(best.id); }
}

// ------------------------------------------------------------------ views and wiring

function show(view) {
  for (const tab of document.querySelectorAll("nav button")) tab.setAttribute("aria-selected", tab.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  if (view === "map") openMap().catch((error) => status(error.message));
  if (view === "dupes" && !$("#dupes").children.length) findDuplicates();
}

function setUp() {
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => show(tab.dataset.view));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchByFile(event.dataTransfer.files[0]);
  });
  $("#pick").addEventListener("change", (event) => searchByFile(event.target.files[0]));
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) { show("search"); searchByFile(item.getAsFile()); }
  });
  $("#filter-form").addEventListener("submit", (event) => { event.preventDefault(); state.query ? runQuery() : browse(); });
  $("#filter-form").addEventListener("reset", () => setTimeout(() => (state.query ? runQuery() : browse()), 0));
  $("#load-more").addEventListener("click", () => browse(true));
  $("#more-like").addEventListener("click", recommend);
  $("#clear-selection").addEventListener("click", () => {
    for (const id of [...state.liked]) vote(id, "liked");
    for (const id of [...state.disliked]) vote(id, "disliked");
  });
  $("#dupes-form").addEventListener("submit", findDuplicates);
  setUpMap();
  api("info").then((info) => { $("#count").textContent = `${info.count} images`; }).catch(() => {});
  browse();
}

setUp();
