// elmsearch EEG viewer: the raw signal drawn in the browser at clinical sensitivity and timebase.
//   GET /api/recordings/ID/signal?start&end&montage&lff&hff&notch  ->  [u32 header length][JSON header][float32 µV]
//   (an upload kept for this session: /api/uploads/TOKEN/signal, the same answer)
// Sensitivity is in µV/mm on the screen: the screen's pixels per millimetre come from a calibration the
// user matches with a ruler (stored in this browser); negative is drawn up by default, as EEG is read.
"use strict";

const SENSITIVITIES = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100];
const PAGES = [5, 10, 15, 20, 30, 60];
const LFFS = ["0.1", "0.3", "0.5", "1", "5", "off"];
const HFFS = ["15", "30", "35", "70", "off"];
const NOTCHES = ["off", "50", "60"];
const MONTAGE_NAMES = {bipolar: "bipolar (double banana)", transverse: "transverse", average: "average ref.",
                       cz: "Cz ref.", ears: "linked ears", recorded: "as recorded"};

function pxPerMm() {
  // the screen's density: the user's calibration, else CSS's nominal 96 px per inch
  const stored = parseFloat(localStorage.getItem("elmsearch.pxPerMm") || "");
  return stored > 0.5 && stored < 50 ? stored : 96 / 25.4;
}

function signalUrl(id) {
  // a recording id, or the API path of what has a /signal (an upload: "/api/uploads/TOKEN")
  return typeof id === "string" && id.startsWith("/api/") ? `${id}/signal` : `/api/recordings/${id}/signal`;
}

async function fetchSignal(id, s) {
  const q = new URLSearchParams({start: s.start.toFixed(3), end: (s.start + s.page).toFixed(3), montage: s.montage,
                                 lff: s.lff, hff: s.hff, notch: s.notch});
  const response = await fetch(`${signalUrl(id)}?${q}`);
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  const buf = await response.arrayBuffer();
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const data = new Float32Array(buf.slice(4 + n));
  return {header, data};
}

function drawSignal(canvas, sig, s, shade, events) {
  // one row per derivation (a gap between chains is half a row), time across the whole page
  const {header, data} = sig;
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const measure = canvas.getContext("2d");
  measure.font = `${s.compact ? 11 : 13}px system-ui, sans-serif`;
  const labelW = Math.ceil(Math.max(60, ...header.ch_names.map((n) => measure.measureText(n).width)) + 12);
  const rows = header.ch_names.map((name) => (name ? 1 : 0.5));
  const rowPx = s.compact ? 16 : 24;
  const height = Math.round(rows.reduce((a, b) => a + b, 0) * rowPx + 28);
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = "#fff";
  g.fillRect(0, 0, width, height);
  const plotW = width - labelW - 8;
  const pxPerS = plotW / s.page;  // the timebase: a page always spans the plot, a short tail is not stretched
  const t0 = header.start_s;
  if (shade) {  // the best-matching window
    g.fillStyle = "rgba(110, 165, 230, 0.16)";
    const a = labelW + Math.max(shade[0] - s.start, 0) * pxPerS, b = labelW + Math.min(shade[1] - s.start, s.page) * pxPerS;
    if (b > a) g.fillRect(a, 0, b - a, height - 20);
  }
  let marked = 0;
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  for (const e of events || []) {  // what a technologist marked, behind the traces, labelled at the top
    const a = Math.max(e.onset, s.start), b = Math.min(e.onset + Math.max(e.duration, 0), s.start + s.page);
    if (b < s.start || a > s.start + s.page) continue;
    const x = labelW + (a - s.start) * pxPerS, w = Math.max((b - a) * pxPerS, 2);
    g.fillStyle = "rgba(201, 138, 0, 0.13)";
    g.fillRect(x, 0, w, height - 20);
    g.fillStyle = "#8a5a00";
    g.fillText(e.meaning && e.meaning !== e.label ? `${e.label} (${e.meaning})` : e.label, x + 2, 1 + 12 * (marked % 2));
    marked += 1;
  }
  canvas.dataset.events = String(marked);
  g.strokeStyle = "#e3e7ec";
  g.lineWidth = 1;
  for (let sec = Math.ceil(s.start); sec <= s.start + s.page; sec += 1) {  // a line every second
    const x = labelW + (sec - s.start) * pxPerS;
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, height - 20); g.stroke();
  }
  const uvPerPx = s.sens / pxPerMm();  // µV/mm over px/mm
  const sign = s.negUp ? 1 : -1;  // canvas y grows downwards: negative up draws +µV downwards
  const n = header.n_times;
  const step = pxPerS / header.sfreq;
  g.font = `${s.compact ? 11 : 13}px system-ui, sans-serif`;
  g.textBaseline = "middle";
  let y = 4;
  const drawn = {};
  header.ch_names.forEach((name, c) => {
    if (!name) { y += rowPx / 2; return; }
    const base = y + rowPx / 2;
    g.fillStyle = "#1d2733";
    g.fillText(name, 4, base);
    g.strokeStyle = "#1d2733";
    g.lineWidth = 1;
    g.beginPath();
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = data[c * n + i];
      const py = base + sign * v / uvPerPx;
      const px = labelW + (t0 - s.start) * pxPerS + i * step;
      if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
      lo = Math.min(lo, py); hi = Math.max(hi, py);
    }
    g.stroke();
    drawn[name] = [lo, hi, base];
    y += rowPx;
  });
  // time axis, calibration bar and what the reader needs to know
  const axisY = height - 14;
  g.fillStyle = "#5b6775";
  g.textBaseline = "middle";
  for (let sec = Math.ceil(s.start); sec <= s.start + s.page; sec += Math.max(1, Math.round(s.page / 10))) {
    g.fillText(`${sec}`, labelW + (sec - s.start) * pxPerS - 4, axisY);
  }
  const barUv = s.sens * 10;  // 10 mm tall
  const barPx = barUv / uvPerPx;
  g.strokeStyle = "#0b5fa5";
  g.lineWidth = 2;
  g.beginPath(); g.moveTo(width - 14, 8); g.lineTo(width - 14, 8 + barPx); g.stroke();
  canvas.dataset.drawn = JSON.stringify(drawn);
  canvas.dataset.uvPerPx = String(uvPerPx);
  canvas.dataset.pxPerS = String(pxPerS);
  canvas.dataset.labelW = String(labelW);
  return `${barUv} µV ▮ · ${s.sens} µV/mm · ${(pxPerS / pxPerMm()).toFixed(0)} mm/s (${s.page} s page) · ` +
    `LFF ${header.filters.lff ?? "off"} Hz · HFF ${header.filters.hff ?? "off"} Hz · notch ${header.filters.notch ?? "off"}` +
    ` · ${s.negUp ? "negative up" : "positive up"} · ${MONTAGE_NAMES[header.montage] || header.montage}`;
}

function viewerState(params, duration) {
  const page = PAGES.includes(+params.get("page")) ? +params.get("page") : 10;
  const sens = SENSITIVITIES.includes(+params.get("sens")) ? +params.get("sens") : 7;
  return {start: Math.max(0, parseFloat(params.get("start") || "0") || 0), page, sens,
          montage: params.get("montage") || "bipolar", lff: params.get("lff") || "1", hff: params.get("hff") || "70",
          notch: params.get("notch") || "off", negUp: params.get("negup") !== "0", duration, compact: false};
}

function select(name, options, value, label, onchange) {
  return el("label", {}, label, " ", el("select", {name, onchange: (e) => onchange(e.target.value)},
    ...options.map((o) => el("option", {value: o, selected: String(o) === String(value) ? "selected" : null},
                             MONTAGE_NAMES[o] || o))));
}

function eegViewer(id, s, options = {}) {
  // a viewer of one recording; options: {shade: [a, b], events: [...], onmove(state), onload(state), compact}
  const box = el("div", {class: "viewer", "data-id": id, tabindex: "0"});
  const canvas = el("canvas", {class: "eeg", role: "img", "aria-label": options.label || `EEG of recording ${id}`});
  const info = el("p", {class: "viewer-info"});
  const banner = el("p", {class: "viewer-banner"});
  const position = el("span", {class: "position"});
  let sig = null;
  let pending = 0;
  const redraw = () => { if (sig) info.textContent = drawSignal(canvas, sig, s, options.shade, options.events); };
  const load = async () => {
    const ticket = ++pending;
    try {
      const got = await fetchSignal(id, s);
      if (ticket !== pending) return;  // a newer page was asked for
      sig = got;
      s.duration = got.header.duration_s;
      banner.textContent = got.header.status === "failed" ? `Not in the index: ${got.header.error}` :
        (got.header.missing.length ? `Not in this file: ${got.header.missing.join(", ")}` : "");
      position.textContent = `${s.start.toFixed(1)}–${(s.start + s.page).toFixed(1)} s of ${got.header.duration_s.toFixed(1)} s`;
      redraw();
      if (options.onload) options.onload(s);
      box.dataset.loaded = String(s.start);
    } catch (err) {
      if (ticket === pending) { banner.textContent = err.message; box.dataset.loaded = "error"; }
    }
  };
  const move = (delta) => {
    const last = Math.max(0, (s.duration || s.start + s.page) - s.page);
    s.start = Math.min(Math.max(0, s.start + delta), Math.max(last, 0));
    if (options.onmove) options.onmove(s);
    load();
  };
  if (!options.compact) {
    const goTo = el("input", {type: "number", min: "0", step: "any", placeholder: "go to s", class: "goto",
                              onchange: (e) => { s.start = Math.max(0, parseFloat(e.target.value) || 0); move(0); }});
    const set = (key, cast) => (value) => { s[key] = cast(value); if (options.onmove) options.onmove(s); load(); };
    box.append(el("div", {class: "viewer-controls"},
      el("button", {type: "button", class: "prev", onclick: () => move(-s.page), title: "← (shift: 1 s)"}, "◀"),
      el("button", {type: "button", class: "next", onclick: () => move(s.page), title: "→ (shift: 1 s)"}, "▶"),
      position, goTo,
      select("sens", SENSITIVITIES, s.sens, "µV/mm", (v) => { s.sens = +v; if (options.onmove) options.onmove(s); redraw(); }),
      select("page", PAGES, s.page, "s/page", set("page", Number)),
      select("montage", Object.keys(MONTAGE_NAMES), s.montage, "montage", set("montage", String)),
      select("lff", LFFS, s.lff, "LFF", set("lff", String)),
      select("hff", HFFS, s.hff, "HFF", set("hff", String)),
      select("notch", NOTCHES, s.notch, "notch", set("notch", String)),
      el("label", {}, el("input", {type: "checkbox", name: "negup", checked: s.negUp ? "checked" : null,
        onchange: (e) => { s.negUp = e.target.checked; if (options.onmove) options.onmove(s); redraw(); }}), " negative up"),
      el("button", {type: "button", class: "calibrate", onclick: () => calibrate(redraw)}, "calibrate screen")));
    box.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault();
        move((e.key === "ArrowRight" ? 1 : -1) * (e.shiftKey ? 1 : s.page));
      } else if (e.key === "+" || e.key === "-") {  // + more sensitive (fewer µV per mm)
        const i = SENSITIVITIES.indexOf(s.sens) + (e.key === "+" ? -1 : 1);
        if (i >= 0 && i < SENSITIVITIES.length) { s.sens = SENSITIVITIES[i]; if (options.onmove) options.onmove(s); redraw(); }
      }
    });
  }
  box.append(banner, canvas, info);
  new ResizeObserver(() => redraw()).observe(canvas);
  box.load = load;
  box.state = s;
  load();
  return box;
}

function calibrate(redraw) {
  // the user matches a bar to 50 mm on a ruler; its pixels per mm are kept in this browser
  const current = pxPerMm();
  const bar = el("div", {class: "ruler", style: `width:${(50 * current).toFixed(1)}px`});
  const input = el("input", {type: "range", min: "100", max: "600", step: "1", value: (50 * current).toFixed(0),
    oninput: (e) => { bar.style.width = `${e.target.value}px`; }});
  const dialog = el("dialog", {class: "calibration"},
    el("p", {}, "Hold a ruler to the screen and drag until the bar is 50 mm long."), bar, input,
    el("div", {}, el("button", {type: "button", onclick: () => {
      localStorage.setItem("elmsearch.pxPerMm", String(+input.value / 50));
      dialog.close(); dialog.remove(); redraw();
    }}, "Save"), " ", el("button", {type: "button", onclick: () => { dialog.close(); dialog.remove(); }}, "Cancel")));
  document.body.append(dialog);
  dialog.showModal();
}
