// gradviz step keys: ← and → press the page's Previous and Next buttons (found by their
// Streamlit key classes), unless the reader is typing, on a slider, or in the graph view
// (which has keys of its own). Streamlit calls the default export again on every rerun
// with the same parentElement; one listener per element lives in LISTENERS.

const LISTENERS = new WeakMap();
const BUSY = "input, textarea, select, [contenteditable], [role=slider], .gv-viewport";

export default function stepKeys(component) {
  const { data, parentElement } = component;
  let state = LISTENERS.get(parentElement);
  if (!state) {
    state = { data: data || {} };
    state.onKey = (e) => onKey(e, state.data);
    document.addEventListener("keydown", state.onKey);
    LISTENERS.set(parentElement, state);
  }
  state.data = data || {};
  return () => {
    document.removeEventListener("keydown", state.onKey);
    LISTENERS.delete(parentElement);
  };
}

function onKey(e, data) {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const key = e.key === "ArrowRight" ? data.next : e.key === "ArrowLeft" ? data.prev : null;
  if (!key) return;
  const target = e.composedPath ? e.composedPath()[0] : e.target;
  if (target && target.closest && target.closest(BUSY)) return;
  const button = document.querySelector(`.st-key-${key} button`);
  if (!button || button.disabled) return;
  e.preventDefault();
  button.click();
}
