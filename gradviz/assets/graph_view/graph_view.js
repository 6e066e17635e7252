// gradviz graph view: shows an SVG that Graphviz already laid out on the server, with
// pan (drag), zoom (Ctrl/⌘ + wheel, pinch, buttons, keys), fit, highlighted and selected nodes, and
// reports the id of a clicked node (the <title> of its <g class="node">) as the
// "click" trigger. The browser never lays anything out; it only moves one transform.
//
// One file serves two hosts. Streamlit (st.components.v2) calls the default export again
// whenever `data` changes, with the same parentElement, so everything set up once lives in
// STATE and later calls only update. anywidget (Jupyter, VS Code, Colab) calls the default
// export with no argument and gets { render }: see renderWidget at the end.

const STATE = new WeakMap();
const MIN_SCALE = 0.02;
const MAX_SCALE = 8;
const DRAG_THRESHOLD = 4; // px a pointer may move and still count as a click
let RENDERS = 0; // SVGs drawn by any instance since the page loaded (tests wait on it)

export default function graphView(component) {
  if (component === undefined) return { render: renderWidget };
  const { data, parentElement, setTriggerValue } = component;
  let view = STATE.get(parentElement);
  if (!view) {
    view = setup(parentElement);
    STATE.set(parentElement, view);
  }
  view.send = setTriggerValue;
  update(view, data || {});
  return () => {
    view.dispose();
    STATE.delete(parentElement);
  };
}

function setup(parent) {
  const root = parent.querySelector(".gv-root");
  const viewport = root.querySelector(".gv-viewport");
  const canvas = root.querySelector(".gv-canvas");
  const status = root.querySelector(".gv-status");
  const view = {
    root, viewport, canvas, status,
    svgText: null, svg: null, width: 0, height: 0,
    nodes: new Map(), // drawn id -> <g class="node">
    highlighted: [], selected: null, focus: null,
    scale: 1, tx: 0, ty: 0,
    pointer: null, send: null, clickable: 0,
    details: {}, clusters: false, tip: null,
  };

  const onWheel = (e) => {
    // A plain wheel scrolls the page, so a tall graph never traps the reader; Ctrl or ⌘
    // with the wheel (a trackpad pinch arrives as Ctrl+wheel too) zooms.
    if (!e.ctrlKey && !e.metaKey) return;
    e.preventDefault();
    const rect = viewport.getBoundingClientRect();
    const factor = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    zoomAt(view, view.scale * factor, e.clientX - rect.left, e.clientY - rect.top);
  };
  const onDown = (e) => {
    if (e.button !== 0) return;
    view.pointer = { id: e.pointerId, x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty, target: e.target, moved: false };
  };
  const onMove = (e) => {
    const p = view.pointer;
    if (!p || p.id !== e.pointerId) return;
    const dx = e.clientX - p.x;
    const dy = e.clientY - p.y;
    if (!p.moved && Math.hypot(dx, dy) < DRAG_THRESHOLD) return;
    if (!p.moved) {
      p.moved = true;
      viewport.setPointerCapture(e.pointerId);
      viewport.classList.add("gv-dragging");
    }
    view.tx = p.tx + dx;
    view.ty = p.ty + dy;
    applyTransform(view);
  };
  const onUp = (e) => {
    const p = view.pointer;
    if (!p || p.id !== e.pointerId) return;
    view.pointer = null;
    viewport.classList.remove("gv-dragging");
    if (p.moved) {
      if (viewport.hasPointerCapture(e.pointerId)) viewport.releasePointerCapture(e.pointerId);
      return;
    }
    const node = p.target && p.target.closest ? p.target.closest("g.node") : null;
    const id = node ? nodeId(node) : null;
    if (!node && view.clusters) {
      // A click on an open module's box (not on a node inside it) asks to close it.
      const cluster = p.target.closest ? p.target.closest("g.cluster") : null;
      const name = cluster ? nodeId(cluster) : null;
      if (name && name.startsWith("cluster_") && view.send) view.send("cluster", name.slice(8));
      return;
    }
    if (!id || id.startsWith("legend_")) return;
    select(view, id);
    root.dataset.clicked = id;
    if (view.send) view.send("click", id);
  };
  const onKey = (e) => {
    const w = viewport.clientWidth / 2;
    const h = viewport.clientHeight / 2;
    if (e.key === "+" || e.key === "=") zoomAt(view, view.scale * 1.25, w, h);
    else if (e.key === "-" || e.key === "_") zoomAt(view, view.scale / 1.25, w, h);
    else if (e.key === "0" || e.key === "f") fit(view);
    else return;
    e.preventDefault();
  };
  const onButton = (e) => {
    const act = e.target.closest("button")?.dataset.act;
    const w = viewport.clientWidth / 2;
    const h = viewport.clientHeight / 2;
    if (act === "in") zoomAt(view, view.scale * 1.25, w, h);
    else if (act === "out") zoomAt(view, view.scale / 1.25, w, h);
    else if (act === "fit") fit(view);
    else if (act === "one") zoomAt(view, 1, w, h);
  };
  // Hover details (shape, dtype, saved tensors, parameter name) when the host sends them.
  const onOver = (e) => {
    const g = e.target.closest ? e.target.closest("g.node") : null;
    const info = g ? view.details[nodeId(g)] : null;
    if (!info) return hideTip(view);
    showTip(view, info, e);
  };
  const onLeave = () => hideTip(view);
  const toolbar = root.querySelector(".gv-toolbar");
  viewport.addEventListener("pointerover", onOver);
  viewport.addEventListener("pointerleave", onLeave);
  viewport.addEventListener("wheel", onWheel, { passive: false });
  viewport.addEventListener("pointerdown", onDown);
  viewport.addEventListener("pointermove", onMove);
  viewport.addEventListener("pointerup", onUp);
  viewport.addEventListener("pointercancel", onUp);
  viewport.addEventListener("keydown", onKey);
  viewport.addEventListener("dblclick", () => fit(view));
  toolbar.addEventListener("click", onButton);
  view.dispose = () => {
    viewport.removeEventListener("pointerover", onOver);
    viewport.removeEventListener("pointerleave", onLeave);
    viewport.removeEventListener("wheel", onWheel);
    viewport.removeEventListener("pointerdown", onDown);
    viewport.removeEventListener("pointermove", onMove);
    viewport.removeEventListener("pointerup", onUp);
    viewport.removeEventListener("pointercancel", onUp);
    viewport.removeEventListener("keydown", onKey);
    toolbar.removeEventListener("click", onButton);
  };
  return view;
}

function nodeId(g) {
  const title = g.querySelector(":scope > title");
  return title ? title.textContent : null;
}

function update(view, data) {
  const height = Number(data.height) || 700;
  view.root.style.height = `${height}px`;
  view.details = data.details && typeof data.details === "object" ? data.details : {};
  view.clusters = Boolean(data.clusters);
  let fresh = false;
  if (typeof data.svg === "string" && data.svg !== view.svgText) {
    const before = layoutKey(view);
    render(view, data.svg);
    // Same nodes at the same size: only colours changed (a backward step), so keep the
    // reader's pan and zoom instead of jumping back to the whole graph.
    fresh = layoutKey(view) !== before;
  }
  setHighlight(view, Array.isArray(data.highlight) ? data.highlight : []);
  select(view, data.selected || null);
  const focus = data.focus || null;
  if (fresh) fit(view, true);
  if (focus && (fresh || focus !== view.focus)) center(view, focus, !fresh);
  view.focus = focus;
  updateStatus(view);
}

function layoutKey(view) {
  return view.nodes ? `${view.width}x${view.height}:${[...view.nodes.keys()].join(",")}` : "";
}

function render(view, svgText) {
  const start = svgText.indexOf("<svg");
  view.canvas.innerHTML = start >= 0 ? svgText.slice(start) : svgText;
  view.svgText = svgText;
  const svg = view.canvas.querySelector("svg");
  view.svg = svg;
  view.nodes = new Map();
  view.highlighted = [];
  view.selected = null;
  if (!svg) {
    view.width = view.height = 0;
    return;
  }
  // Graphviz sizes in points with a viewBox; draw one viewBox unit per CSS pixel and let
  // the transform do all scaling.
  const box = svg.viewBox && svg.viewBox.baseVal;
  view.width = box && box.width ? box.width : parseFloat(svg.getAttribute("width")) || 0;
  view.height = box && box.height ? box.height : parseFloat(svg.getAttribute("height")) || 0;
  svg.setAttribute("width", `${view.width}px`);
  svg.setAttribute("height", `${view.height}px`);
  for (const g of svg.querySelectorAll("g.node")) {
    const id = nodeId(g);
    if (id === null) continue;
    view.nodes.set(id, g);
    if (!id.startsWith("legend_")) g.classList.add("gv-clickable");
    // Graphviz's own tooltip repeats the id; the toolbar says what a click does.
    g.querySelectorAll("a").forEach((a) => a.removeAttribute("xlink:title"));
  }
  view.clickable = [...view.nodes.keys()].filter((id) => !id.startsWith("legend_")).length;
  RENDERS += 1;
  view.root.dataset.renders = String(RENDERS);
  view.root.dataset.nodes = String(view.nodes.size);
}

function setHighlight(view, ids) {
  for (const g of view.highlighted) g.classList.remove("gv-hl");
  view.highlighted = [];
  for (const id of ids) {
    const g = view.nodes.get(id);
    if (g) {
      g.classList.add("gv-hl");
      view.highlighted.push(g);
    }
  }
  view.canvas.classList.toggle("gv-has-hl", view.highlighted.length > 0);
  view.root.dataset.highlighted = String(view.highlighted.length);
}

function select(view, id) {
  if (view.selected) view.selected.classList.remove("gv-sel");
  view.selected = id ? view.nodes.get(id) || null : null;
  if (view.selected) view.selected.classList.add("gv-sel");
  view.root.dataset.selected = id || "";
}

function applyTransform(view) {
  view.canvas.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.scale})`;
  updateStatus(view);
}

function updateStatus(view) {
  const hl = view.highlighted.length ? ` · ${view.highlighted.length} highlighted` : "";
  view.status.textContent = `${view.clickable} drawn · ${Math.round(view.scale * 100)}%${hl}`;
}

function zoomAt(view, scale, x, y) {
  const s = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
  view.tx = x - ((x - view.tx) * s) / view.scale;
  view.ty = y - ((y - view.ty) * s) / view.scale;
  view.scale = s;
  applyTransform(view);
}

function fit(view, initial = false) {
  const vw = view.viewport.clientWidth || 800;
  const vh = view.viewport.clientHeight || 600;
  if (!view.width || !view.height) return;
  const byWidth = Math.min(1, (0.96 * vw) / view.width);
  let s = Math.min(byWidth, (0.96 * vh) / view.height);
  // A first view too small to read shows the graph's full width from the top instead;
  // "Fit" (or 0, or a double-click) still shows all of it.
  if (initial && s < 0.6) s = byWidth;
  view.scale = Math.max(MIN_SCALE, s);
  view.tx = (vw - view.width * view.scale) / 2;
  view.ty = Math.max(4, (vh - view.height * view.scale) / 2);
  applyTransform(view);
}

// onlyIfHidden: leave the view alone while the node is well inside it, so stepping along
// neighbouring nodes does not slide the picture at every step.
function center(view, id, onlyIfHidden = false) {
  const g = view.nodes.get(id);
  if (!g || !view.svg) return;
  // getCTM maps the node's user units (Graphviz's root <g> carries a translate) to the
  // <svg> element, drawn one unit per CSS pixel before the canvas transform.
  const box = g.getBBox();
  const m = g.getCTM();
  if (!m) return;
  const bx = box.x + box.width / 2;
  const by = box.y + box.height / 2;
  const cx = m.a * bx + m.c * by + m.e;
  const cy = m.b * bx + m.d * by + m.f;
  if (onlyIfHidden) {
    const x = view.tx + cx * view.scale;
    const y = view.ty + cy * view.scale;
    const w = view.viewport.clientWidth;
    const h = view.viewport.clientHeight;
    if (x > 0.15 * w && x < 0.85 * w && y > 0.15 * h && y < 0.85 * h) return;
  }
  const s = Math.max(view.scale, 0.6);
  view.scale = Math.min(MAX_SCALE, s);
  view.tx = view.viewport.clientWidth / 2 - cx * view.scale;
  view.ty = view.viewport.clientHeight / 2 - cy * view.scale;
  applyTransform(view);
}

function tipElement(view) {
  if (!view.tip) {
    view.tip = document.createElement("div");
    view.tip.className = "gv-tip";
    view.tip.hidden = true;
    view.root.appendChild(view.tip);
  }
  return view.tip;
}

// info: { title, rows: [[name, value], ...] } (plain text; never parsed as HTML).
function fillDetails(box, info) {
  box.replaceChildren();
  const head = document.createElement("div");
  head.className = "gv-tip-title";
  head.textContent = info.title || "";
  box.appendChild(head);
  const table = document.createElement("table");
  for (const [name, value] of info.rows || []) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = value;
  }
  box.appendChild(table);
}

function showTip(view, info, e) {
  const tip = tipElement(view);
  fillDetails(tip, info);
  const rect = view.root.getBoundingClientRect();
  tip.hidden = false;
  const x = Math.min(e.clientX - rect.left + 14, rect.width - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(4, x)}px`;
  tip.style.top = `${e.clientY - rect.top + 14}px`;
  view.root.dataset.hover = info.title || "";
}

function hideTip(view) {
  if (view.tip) view.tip.hidden = true;
}

// -- the anywidget host ------------------------------------------------------------------
// The Python side (gradviz.notebook) sends the component's HTML as `_html` (the same
// graph_view.html Streamlit uses) and the view's state as traits. A click sets `selected`;
// a click on an open module, a breadcrumb step and a search are sent back as messages or
// the `query` trait. A side panel shows the selected node's details.
const WIDGET_TRAITS = ["svg", "highlight", "selected", "focus", "height", "details", "clusters"];

function renderWidget({ model, el }) {
  el.classList.add("gv-widget");
  el.innerHTML =
    '<div class="gv-bar"><input class="gv-search" type="search" ' +
    'placeholder="Search ops, modules, parameters" aria-label="Search">' +
    '<span class="gv-found"></span><span class="gv-crumbs"></span></div>' +
    `<div class="gv-body"><div class="gv-main">${model.get("_html")}</div>` +
    '<div class="gv-details"></div></div>';
  const view = setup(el.querySelector(".gv-main"));
  const search = el.querySelector(".gv-search");
  const crumbs = el.querySelector(".gv-crumbs");
  const found = el.querySelector(".gv-found");
  const panel = el.querySelector(".gv-details");
  el.querySelector(".gv-bar").hidden = !model.get("searchable");
  view.send = (name, value) => {
    if (name === "click") {
      model.set("selected", value);
      model.save_changes();
    } else {
      model.send({ event: name, value });
    }
  };
  const draw = () => {
    const data = {};
    for (const k of WIDGET_TRAITS) data[k] = model.get(k);
    update(view, data);
    const info = data.selected ? view.details[data.selected] : null;
    panel.hidden = !info;
    if (info) fillDetails(panel, info);
  };
  const drawCrumbs = () => {
    crumbs.replaceChildren();
    (model.get("crumbs") || []).forEach((label, i, all) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = (i === 0 ? "⌂ " : "› ") + label;
      b.disabled = i === all.length - 1;
      b.addEventListener("click", () => model.send({ event: "back", value: i }));
      crumbs.appendChild(b);
    });
    found.textContent = model.get("found") || "";
  };
  let typing = null;
  search.value = model.get("query") || "";
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      model.set("query", search.value);
      model.save_changes();
    }, 250);
  });
  const events = WIDGET_TRAITS.map((k) => `change:${k}`).join(" ");
  model.on(events, draw);
  model.on("change:crumbs change:found", drawCrumbs);
  draw();
  drawCrumbs();
  return () => {
    clearTimeout(typing);
    model.off(events, draw);
    model.off("change:crumbs change:found", drawCrumbs);
    view.dispose();
  };
}
