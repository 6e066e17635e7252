// gradviz backward player: shows GRADVIZ_PLAYER.frames one at a time (each an SVG that
// Graphviz laid out), with play/pause, step, scrub and speed. <body> carries data-frame
// (0-based), data-frames and data-playing so a test or a host page can follow along.
(function () {
  const data = GRADVIZ_PLAYER;
  const frames = data.frames;
  const body = document.body;
  const stage = document.querySelector(".gp-stage");
  const caption = document.querySelector(".gp-caption");
  const count = document.querySelector(".gp-count");
  const scrub = document.querySelector(".gp-scrub");
  const speed = document.querySelector(".gp-speed");
  const play = document.querySelector(".gp-play");
  let index = 0;
  let timer = null;

  function show(i) {
    index = Math.max(0, Math.min(frames.length - 1, i));
    const f = frames[index];
    stage.innerHTML = f.svg;
    caption.textContent = f.caption;
    count.textContent = `${index + 1} / ${frames.length}`;
    scrub.value = String(index + 1);
    body.dataset.frame = String(index);
    body.dataset.node = f.node;
  }

  function stop() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    play.textContent = "▶ Play";
    body.dataset.playing = "false";
  }

  function tick() {
    if (index >= frames.length - 1) {
      stop();
      return;
    }
    show(index + 1);
    timer = setTimeout(tick, data.interval / Number(speed.value));
  }

  function start() {
    if (index >= frames.length - 1) show(0); // play again from the start
    play.textContent = "⏸ Pause";
    body.dataset.playing = "true";
    timer = setTimeout(tick, data.interval / Number(speed.value));
  }

  function toggle() {
    if (timer === null) start();
    else stop();
  }

  const acts = {
    first: () => { stop(); show(0); },
    prev: () => { stop(); show(index - 1); },
    next: () => { stop(); show(index + 1); },
    last: () => { stop(); show(frames.length - 1); },
    play: toggle,
  };
  document.querySelector(".gp-bar").addEventListener("click", (e) => {
    const act = e.target.closest("button")?.dataset.act;
    if (act) acts[act]();
  });
  scrub.addEventListener("input", () => { stop(); show(Number(scrub.value) - 1); });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT") return;
    const key = { " ": "play", ArrowLeft: "prev", ArrowRight: "next", Home: "first", End: "last" }[e.key];
    if (!key) return;
    e.preventDefault();
    acts[key]();
  });

  scrub.max = String(frames.length);
  body.dataset.frames = String(frames.length);
  const wanted = String(data.speed);
  if (![...speed.options].some((o) => o.value === wanted)) speed.add(new Option(`${wanted}×`, wanted));
  speed.value = wanted;
  if (frames.length) show(0);
})();
