// elmsearch search page: the URL holds the whole state, so every view can be bookmarked and shared.
//   /?q=TEXT&sex=F&...           text -> EEG search
//   /recordings/ID?start=&end=   one recording (waveform, spectrogram, report)
//   /recordings/ID/similar       prior cases like it
//   /recordings/ID/reports       reports that describe it
//   /uploads/TOKEN               an uploaded EDF (kept for this session, never indexed): its EEG and answers
// Everything comes from the JSON API (/api/...); text is inserted as text, never as HTML.
"use strict";

const FILTERS = ["sex", "age_min", "age_max", "after", "before", "montage", "min_duration", "has_event"];
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === "") continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function status(message, isError = false) {
  const s = $("#status");
  s.textContent = message || "";
  s.className = isError ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

function filterParams(params) {
  const out = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) out.set(name, params.get(name));
  return out;
}

function go(url) {
  history.pushState(null, "", url);
  route();
}

function link(href, text, cls) {
  return el("a", {href, class: cls, onclick: (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(href);
  }}, text);
}

function span(hit) {
  // The best-matching window with a little context on each side (the plots take up to 60 s).
  if (hit.start_s === null || hit.start_s === undefined) return [0, 10];
  const pad = Math.max(0, (10 - (hit.end_s - hit.start_s)) / 2);
  return [Math.max(0, hit.start_s - pad), hit.end_s + pad];
}

function hitViewer(id, start, end, best, label) {
  // the hit's EEG drawn in the browser at 7 µV/mm, 10 s around its best window; fetched when scrolled to
  const holder = el("div", {class: "hit-eeg"});
  const s = {start, page: 10, sens: 7, montage: "bipolar", lff: "1", hff: "70", notch: "off", negUp: true, compact: true};
  const show = () => holder.replaceChildren(eegViewer(id, s, {shade: best, compact: true, label}));
  if ("IntersectionObserver" in window) {
    const seen = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) { seen.disconnect(); show(); }
    }, {rootMargin: "400px"});
    seen.observe(holder);
  } else show();
  return holder;
}

function metaLine(h) {
  const age = h.age === null || h.age === undefined ? "" : `${h.age} y`;
  return [h.patient && `patient ${h.patient}`, h.date && h.date.slice(0, 10), [age, h.sex].filter(Boolean).join(" "),
          h.montage].filter(Boolean).join(" · ");
}

function why(h) {
  // a text-search hit's evidence: its report sentences with their assertion status, the score of each source
  const box = el("div", {class: "why"});
  for (const e of (h.evidence || []).filter((e) => e.text).slice(0, 2)) {
    box.append(el("p", {class: `evidence ${e.agrees ? "agrees" : "contradicts"}`},
      el("span", {class: `status ${e.status}`}, e.status), " ", e.section ? `${e.section}: ` : "",
      e.agrees ? el("mark", {}, e.text) : el("span", {}, e.text)));
  }
  for (const e of (h.evidence || []).filter((e) => e.event).slice(0, 2)) box.append(eventLine(e.event));
  const s = h.sources;
  if (s.eeg === undefined) {  // a window hit: inside a marked event, or found by the EEG
    box.append(el("p", {class: "sources"}, (s.event === null || s.event === undefined ? "no matching event" :
      `event ${s.event.toFixed(2)}`) + ` · EEG cosine ${s.eeg_cosine.toFixed(2)}`));
    return box;
  }
  const report = s.report === null || s.report === undefined ? "no report read" : `report ${s.report.toFixed(2)}`;
  const visit = h.also && h.also.length ? ` · same visit: ${h.also.map((i) => `#${i}`).join(", ")}` : "";
  box.append(el("p", {class: "sources"}, `${report} · EEG ${s.eeg.toFixed(2)} (cosine ${s.eeg_cosine.toFixed(2)}, ` +
    `best window ${s.window_cosine.toFixed(2)})${visit}`));
  return box;
}

function eventText(e) {
  return e.meaning && e.meaning !== e.label ? `${e.label} (${e.meaning})` : e.label;
}

function eventLine(e) {
  // an event a technologist marked: what, when, where, from which file
  const when = e.duration > 0 ? `${e.onset.toFixed(1)}–${(e.onset + e.duration).toFixed(1)} s` : `${e.onset.toFixed(1)} s`;
  return el("p", {class: "evidence event"}, el("span", {class: "status event"}, "event"), " ",
    el("mark", {}, eventText(e)), ` · ${when}` + (e.channels.length ? ` · ${e.channels.join(", ")}` : "") +
    ` · ${e.source}`);
}

function eventStrip(events, from, to, id, params, length) {
  // the events of [from, to] on a time line; a click on one shows its minutes
  const strip = el("div", {class: "events-strip", role: "list", "aria-label": `events ${from.toFixed(0)}–${to.toFixed(0)} s`});
  const span = Math.max(to - from, 1e-9);
  for (const e of events) {
    const a = Math.max(e.onset, from), b = Math.min(e.onset + Math.max(e.duration, 0), to);
    if (b < from || a > to) continue;
    const left = 100 * (a - from) / span, width = Math.max(100 * (b - a) / span, 0.4);
    const start = Math.max(0, e.onset + e.duration / 2 - length / 2);
    const next = new URLSearchParams(params);
    next.set("start", start.toFixed(2));
    next.set("end", (start + length).toFixed(2));
    strip.append(el("a", {class: "event-mark", role: "listitem", href: `/recordings/${id}?${next}`,
      title: `${eventText(e)} · ${e.onset.toFixed(1)} s`, style: `left:${left.toFixed(2)}%;width:${width.toFixed(2)}%`,
      onclick: (ev) => { ev.preventDefault(); go(`/recordings/${id}?${next}`); }}, eventText(e)));
  }
  return strip;
}

function eventsTable(events, id, params, length) {
  if (!events.length) return el("p", {}, "No events marked in this recording.");
  const rows = events.slice(0, 200).map((e) => {
    const start = Math.max(0, e.onset + e.duration / 2 - length / 2);
    const next = new URLSearchParams(params);
    next.set("start", start.toFixed(2));
    next.set("end", (start + length).toFixed(2));
    return el("tr", {}, el("td", {}, link(`/recordings/${id}?${next}`, e.onset.toFixed(2), "event-time")),
      el("td", {}, e.duration.toFixed(2)), el("td", {}, eventText(e)), el("td", {}, e.channels.join(", ")),
      el("td", {}, e.source));
  });
  return el("div", {},
    el("table", {class: "events"}, el("thead", {}, el("tr", {}, ...["onset (s)", "duration (s)", "event", "channels",
      "source"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    events.length > 200 ? el("p", {}, `${events.length - 200} more events (GET /api/recordings/${id}/events)`) : null);
}

function hitCard(h, query) {
  const [start, end] = span(h);
  const open = new URLSearchParams({start: start.toFixed(2)});
  if (h.start_s !== null && h.start_s !== undefined) open.set("best", `${h.start_s},${h.end_s}`);
  if (query) open.set("q", query);
  const said = (h.evidence || []).find((e) => e.agrees && e.text);
  if (h.sentence) open.set("hl", h.sentence.replace(/^[^:]*: /, ""));
  else if (said) open.set("hl", said.text);
  const window = h.start_s === null || h.start_s === undefined ? "" : ` · best window ${h.start_s}–${h.end_s} s`;
  return el("article", {class: "hit", "data-id": h.recording_id},
    el("h3", {}, el("span", {class: "score", title: h.sources ? "probability of a match (reports and EEG)" : "cosine similarity"}, h.score.toFixed(3)),
       percentileBadge(h),
       link(`/recordings/${h.recording_id}?${open}`, `#${h.rank} recording ${h.recording_id}`, "open"),
       el("span", {class: "meta"}, metaLine(h) + window)),
    h.sentence ? el("p", {class: "sentence"}, "Best sentence: ", el("mark", {}, h.sentence)) : null,
    h.sources ? why(h) : null,
    el("p", {class: "impression"}, h.impression ? `Impression: ${h.impression}` : "(no report)"),
    hitViewer(h.recording_id, start, end, h.start_s === null || h.start_s === undefined ? null : [h.start_s, h.end_s]),
    el("div", {class: "links"},
       link(`/recordings/${h.recording_id}/similar`, "Similar cases", "similar"),
       link(`/recordings/${h.recording_id}/reports`, "Reports like this", "reports"),
       link(`/recordings/${h.recording_id}?${open}`, "Open recording", "open")));
}

function percentileBadge(h) {
  // where the raw score stands among the archive's scores for this kind of query
  if (h.percentile === null || h.percentile === undefined) return null;
  return el("span", {class: "percentile", title: "percentile among the top hits that this archive's own queries " +
    "of this kind get (100: higher than all of them)"}, `${Math.round(h.percentile)}th pct`);
}

function unlikeWarning(nearest) {
  // a query recording whose nearest prior case is farther than the archive's recordings' nearest ones
  if (!nearest || !nearest.unlike_archive) return null;
  return el("p", {class: "warning unlike"}, `This recording is unlike the archive: its nearest prior case scores ` +
    `${nearest.score.toFixed(3)}, below ${Math.round(100 - nearest.percentile)} % of the archive's own recordings' ` +
    `nearest (${nearest.reference.toFixed(3)} at the 5th percentile). The cases below are the least unlike, not alike.`);
}

function showHits(doc, title, query) {
  const results = $("#results");
  results.replaceChildren(el("h2", {class: "title"}, title));
  const warning = unlikeWarning(doc.nearest);
  if (warning) results.append(warning);
  if (!doc.hits.length) results.append(el("p", {}, "No recordings match."));
  for (const h of doc.hits) results.append(hitCard(h, query));
}

async function runSearch(params) {
  const q = params.get("q");
  $("#q").value = q;
  const form = $("#search");
  for (const name of [...FILTERS, "k", "level", "source"]) if (form.elements[name]) form.elements[name].value = params.get(name) || form.elements[name].defaultValue || "";
  if (FILTERS.some((n) => params.get(n))) $("#filters").open = true;
  status("Searching…");
  const api_params = filterParams(params);
  api_params.set("q", q);
  api_params.set("k", params.get("k") || "10");
  if (params.get("level")) api_params.set("level", params.get("level"));
  if (params.get("source")) api_params.set("source", params.get("source"));
  const t0 = performance.now();
  const doc = await api(`/api/search?${api_params}`);
  status(`${doc.hits.length} hits in ${Math.round(performance.now() - t0)} ms`);
  const from = {hybrid: "reports and EEG", reports: "reports", eeg: "EEG"}[doc.source] || "EEG";
  showHits(doc, `Text → EEG: “${q}” (from ${from})`, q);
}

function reportView(report, highlight) {
  if (!report) return el("p", {}, "No report for this recording.");
  const box = el("div", {class: "report"});
  for (const sec of report.sections) {
    const p = el("p");
    const text = sec.text || "";
    const at = highlight ? text.indexOf(highlight) : -1;
    if (at >= 0) p.append(text.slice(0, at), el("mark", {}, highlight), text.slice(at + highlight.length));
    else p.append(text);
    box.append(el("section", {}, el("h4", {}, sec.heading || "Report"), p));
  }
  return box;
}

function stateParams(params, s) {
  // the page's parameters with the viewer's state (start, page, sensitivity, montage, filters, polarity)
  const next = new URLSearchParams(params);
  next.set("start", s.start.toFixed(2));
  for (const [k, v] of [["page", s.page], ["sens", s.sens], ["montage", s.montage], ["lff", s.lff], ["hff", s.hff],
                        ["notch", s.notch], ["negup", s.negUp ? "1" : "0"]]) next.set(k, String(v));
  next.delete("end");
  return next;
}

async function showRecording(id, params) {
  status("Loading…");
  const match = params.get("q");
  const doc = await api(`/api/recordings/${id}` + (match ? `?match=${encodeURIComponent(match)}` : ""));
  const state = viewerState(params, doc.duration_s);
  const highlight = params.get("hl") || (doc.match && doc.match.text) || null;
  const best = (params.get("best") || "").split(",").map(parseFloat);
  const strip = el("div", {class: "strips"});
  const jump = (e) => {  // a click on the overview shows the page around that time
    if (e.target.closest("a")) return;
    const box = e.currentTarget.getBoundingClientRect();
    const t = (e.clientX - box.left) / box.width * total();
    viewer.state.start = Math.max(0, Math.min(t - state.page / 2, total() - state.page));
    onmove(viewer.state);
    viewer.load();
  };
  // the recording's length: stored for an indexed one, else from the signal once drawn (a refused file)
  const total = () => doc.duration_s || state.duration || state.start + state.page;
  const drawStrips = () => {
    const start = state.start, end = state.start + state.page;
    strip.replaceChildren(eventStrip(doc.events || [], start, end, id, params, state.page),
      el("div", {class: "overview", title: "the whole recording: events, best window and the span shown (click to go)",
                 onclick: jump},
         eventStrip(doc.events || [], 0, total(), id, params, state.page),
         best.length === 2 && best.every(Number.isFinite) ? el("div", {class: "best", style:
           `left:${(100 * best[0] / total()).toFixed(2)}%;` +
           `width:${Math.max(0.4, 100 * (best[1] - best[0]) / total()).toFixed(2)}%`}) : null,
         el("div", {class: "shown", style: `left:${(100 * start / total()).toFixed(2)}%;` +
           `width:${(100 * Math.min(state.page, total()) / total()).toFixed(2)}%`})));
  };
  const onmove = (s) => {  // the URL keeps the viewer's state: a reload or a link shows the same page
    history.replaceState(null, "", `/recordings/${id}?${stateParams(params, s)}`);
    drawStrips();
  };
  const viewer = eegViewer(id, state, {shade: best.length === 2 && best.every(Number.isFinite) ? best : null, onmove,
                                      onload: drawStrips, events: doc.events || []});
  drawStrips();
  const kv = el("dl", {class: "kv"});
  for (const [k, v] of [["patient", doc.patient], ["session", doc.session], ["date", doc.date],
                        ["age / sex", [doc.age, doc.sex].filter((x) => x !== null).join(" ")],
                        ["montage", doc.montage], ["duration", doc.duration_s && `${doc.duration_s} s`],
                        ["native rate", doc.native_sfreq && `${doc.native_sfreq} Hz`], ["file", doc.path]]) {
    kv.append(el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? "–" : v));
  }
  $("#results").replaceChildren(el("article", {class: "recording card", "data-id": id},
    el("h2", {}, `Recording ${id}`), kv,
    viewer, strip,
    el("div", {class: "links"},
       link(`/recordings/${id}/similar`, "Similar cases", "similar"),
       link(`/recordings/${id}/reports`, "Reports like this", "reports"),
       el("a", {href: `/api/recordings/${id}/window.png?start=${state.start}&end=${state.start + Math.min(state.page, 60)}`,
                class: "export"}, "PNG (export)")),
    ...(doc.warnings || []).map((w) => el("p", {class: "warning"}, `Read with a warning: ${w}`)),
    el("h3", {}, `Events (${(doc.events || []).length})`), eventsTable(doc.events || [], id, params, state.page),
    el("h3", {}, "Report"), reportView(doc.report, highlight)));
  viewer.focus({preventScroll: true});  // ← → page, shift 1 s, + − sensitivity
  status(doc.match ? `Sentence nearest to “${match}” highlighted (score ${doc.match.score.toFixed(3)})` : "");
}

async function showRelated(id, view, params) {
  status("Searching…");
  const query = filterParams(params);
  const doc = await api(`/api/recordings/${id}/${view}?${query}`);
  status(`${doc.hits.length} hits`);
  showHits(doc, view === "similar" ? `Prior cases like recording ${id} (other patients)`
                                   : `Reports that describe recording ${id}`);
  if (view === "similar") $("#results .title").after(queryEeg(id, `recording ${id}`, `/recordings/${id}`));
}

async function showHome() {
  $("#results").replaceChildren();
  const s = await api("/api/stats");
  status(`${s.recordings} recordings (${s.with_report} with a report; ${s.reports} distinct reports, a visit's ` +
    `recordings share one), ${s.hours.toFixed(1)} h of EEG. Type a description above.`);
}

async function uploadFile(file) {
  // sent with keep=true: the server keeps the file (never indexed) for this session, and its page has a URL
  const body = new FormData();
  body.append("file", file);
  status(`Reading ${file.name}…`);
  const doc = await api("/api/upload?keep=true", {method: "POST", body});
  go(`/uploads/${encodeURIComponent(doc.upload_id)}`);
}

function queryEeg(id, label, href) {
  // the query's EEG above its prior cases, at the same sensitivity and timebase
  return el("section", {class: "card query-eeg"},
    el("h3", {}, "Query: ", href ? link(href, label, "open") : label,
       el("span", {class: "meta"}, " · 7 µV/mm, 10 s, as each prior case below")),
    hitViewer(id, 0, 10, null, `EEG of ${label}`));
}

async function showUpload(token, params) {
  status("Loading…");
  const doc = await api(`/api/uploads/${encodeURIComponent(token)}`);
  const base = `/api/uploads/${encodeURIComponent(token)}`;
  const state = viewerState(params, null);
  const onmove = (s) => history.replaceState(null, "", `/uploads/${encodeURIComponent(token)}?${stateParams(params, s)}`);
  const viewer = eegViewer(base, state, {onmove, label: `EEG of ${doc.filename}`});
  const results = $("#results");
  results.replaceChildren(el("article", {class: "recording card upload", "data-upload": token},
    el("h2", {}, `Upload: ${doc.filename}`),
    el("p", {class: "meta"}, `${doc.n_windows} windows; not added to the index; kept on this server for an hour ` +
       "after its last use (this page's address works until then)."), viewer));
  const similar = el("section", {class: "similar"});
  const prior = el("div");
  prior.append(el("h2", {class: "title"}, `Prior cases like ${doc.filename} (other patients)`));
  const warning = unlikeWarning(doc.similar.nearest);
  if (warning) prior.append(warning);
  prior.append(queryEeg(base, doc.filename, null));
  if (!doc.similar.hits.length) prior.append(el("p", {}, "No recordings match."));
  for (const h of doc.similar.hits) prior.append(hitCard(h));
  similar.append(prior);
  if (doc.reports) {
    similar.append(el("h2", {class: "title"}, `Reports that describe ${doc.filename}`));
    for (const h of doc.reports.hits) similar.append(hitCard(h));
  }
  results.append(similar);
  viewer.focus({preventScroll: true});
  status("");
}

async function route() {
  const params = new URLSearchParams(location.search);
  const m = location.pathname.match(/^\/recordings\/(\d+)(?:\/(similar|reports))?\/?$/);
  const u = location.pathname.match(/^\/uploads\/([A-Za-z0-9_-]+)\/?$/);
  try {
    if (u) await showUpload(u[1], params);
    else if (m && m[2]) await showRelated(m[1], m[2], params);
    else if (m) await showRecording(m[1], params);
    else if (params.get("q")) await runSearch(params);
    else await showHome();
  } catch (err) {
    status(err.message, true);
  }
}

$("#search").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v !== "" && !(k === "k" && v === "10") && !(k === "level" && v === "recording") &&
      !(k === "source" && v === "hybrid")) params.set(k, v);
  go(`/?${params}`);
});
$("#file").addEventListener("change", (e) => {
  if (e.target.files.length) uploadFile(e.target.files[0]).catch((err) => status(err.message, true));
  e.target.value = "";
});
window.addEventListener("popstate", route);
route();
