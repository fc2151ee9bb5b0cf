// The zoo's page: pick a served model, see its card, try it. Plain JS against the JSON/PNG endpoints of zoo/serve.py.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PANEL = { classifier: "classifier", pix2pix: "pix2pix", gan: "sampler", vae: "sampler", char_lm: "char_lm",
                forecaster: "forecaster" };
let models = {};
let current = null;

function status(message) { $("#status").textContent = message || ""; }

// Every error the server sends is JSON {detail}: a string, or FastAPI's list of validation errors.
async function failure(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail
      : body.detail.map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`).join("; ");
  } catch (err) { /* not JSON: keep the status line */ }
  return new Error(detail);
}

async function post(body, query = "", contentType = "application/octet-stream") {
  const json = !(body instanceof Blob);
  const response = await fetch(`${current.predict}${query}`, {
    method: "POST",
    headers: { "Content-Type": json ? "application/json" : (body.type || contentType) },
    body: json ? JSON.stringify(body) : body,
  });
  if (!response.ok) throw await failure(response);
  return response;
}

// Runs an action, showing its error (if any) under the panels; marks `target` done for scripts and tests.
async function attempt(target, action) {
  status("");
  target.dataset.state = "busy";
  try {
    await action();
    target.dataset.state = "done";
  } catch (err) {
    target.dataset.state = "error";
    status(err.message);
  }
}

async function showImage(img, response) {
  const url = URL.createObjectURL(await response.blob());
  await new Promise((resolve) => { img.onload = resolve; img.src = url; });
}

// ------------------------------------------------------------------------------------------------- model picker
function showCard(m) {
  $("#card-name").textContent = m.name;
  $("#card-dataset").textContent = `${m.model} on ${m.dataset || "?"}`;
  $("#family").textContent = m.family;
  $("#card-command").textContent = m.metrics_command ? `measured by: ${m.metrics_command}` : "";
  const rows = Object.entries(m.metrics).map(([k, v]) => {
    const pct = /acc/.test(k) ? `${(100 * v).toFixed(2)} %` : Number(v).toPrecision(4);
    return `<tr><td>${k}</td><td>${pct}</td></tr>`;
  });
  $("#metrics tbody").innerHTML = rows.join("");
}

function select(name) {
  current = models[name];
  showCard(current);
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = true;
  $(`#panel-${PANEL[current.family]}`).hidden = false;
  status("");
  if (current.family === "gan" || current.family === "vae") sample();
  if (current.family === "forecaster") loadSeries();
  if (current.family === "char_lm" && current.inputs.prompts.length) $("#prompt").value = current.inputs.prompts[0];
  history.replaceState(null, "", `#${name}`);
}

async function init() {
  const response = await fetch("/v1/models");
  const list = (await response.json()).models;
  for (const m of list) {
    models[m.name] = m;
    $("#model").add(new Option(`${m.name} (${m.family})`, m.name));
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  $("#model").value = models[wanted] ? wanted : list[0].name;
  select($("#model").value);
  document.body.dataset.ready = "true";
}
$("#model").addEventListener("change", (e) => select(e.target.value));

// --------------------------------------------------------------------------------------------------- classifier
function classify(file) {
  const preview = $("#preview");
  preview.src = URL.createObjectURL(file);
  attempt($("#bars"), async () => {
    const result = await (await post(file, "?k=5", "image/jpeg")).json();
    $("#bars").innerHTML = result.predictions.map((p) => `
      <div class="bar"><span class="label">${p.label}</span>
        <div><div class="fill" style="width:${(100 * p.probability).toFixed(1)}%"></div></div>
        <span class="prob">${(100 * p.probability).toFixed(1)} %</span></div>`).join("");
  });
}
$("#image-file").addEventListener("change", (e) => e.target.files[0] && classify(e.target.files[0]));
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});

// ------------------------------------------------------------------------------------------------------ pix2pix
const sketch = $("#sketch");
const pen = sketch.getContext("2d");
function clearSketch() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, sketch.width, sketch.height);
}
clearSketch();
let drawing = false;
function at(e) {
  const r = sketch.getBoundingClientRect();
  return [(e.clientX - r.left) * sketch.width / r.width, (e.clientY - r.top) * sketch.height / r.height];
}
sketch.addEventListener("pointerdown", (e) => {
  drawing = true;
  sketch.setPointerCapture(e.pointerId);
  pen.beginPath();
  pen.moveTo(...at(e));
});
sketch.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  pen.lineWidth = 10;  // about 1 pixel at the model's 32 px
  pen.lineCap = pen.lineJoin = "round";
  pen.strokeStyle = "#000";
  pen.lineTo(...at(e));
  pen.stroke();
});
sketch.addEventListener("pointerup", () => { drawing = false; });
$("#clear").addEventListener("click", clearSketch);
$("#translate").addEventListener("click", () => attempt($("#p2p-out"), async () => {
  const blob = await new Promise((resolve) => sketch.toBlob(resolve, "image/png"));
  await showImage($("#p2p-out"), await post(blob, "?input=a"));
  $("#p2p-caption").textContent = "output for the sketch";
}));
$("#photo-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  attempt($("#p2p-out"), async () => {
    await showImage($("#p2p-out"), await post(file, "?input=photo&pair=true", "image/jpeg"));
    $("#p2p-caption").textContent = "edges derived from the photo | output";
  });
});

// ------------------------------------------------------------------------------------------------- GAN and VAE
let pending = null;
function sample() {
  $("#seed-value").textContent = $("#seed").value;
  clearTimeout(pending);  // the slider fires on every step: ask only once it rests
  $("#grid").dataset.state = "pending";
  pending = setTimeout(() => attempt($("#grid"), async () => {
    const body = { seed: Number($("#seed").value), count: Number($("#count").value) };
    await showImage($("#grid"), await post(body));
  }), 120);
}
$("#seed").addEventListener("input", sample);
$("#count").addEventListener("change", sample);

// ----------------------------------------------------------------------------------------------------- char LM
$("#generate").addEventListener("click", () => attempt($("#text"), async () => {
  $("#text").textContent = "…";
  const seed = $("#gen-seed").value;
  const body = { prompt: $("#prompt").value, length: Number($("#length").value),
                 temperature: Number($("#temperature").value), top_k: Number($("#top-k").value),
                 seed: seed === "" ? null : Number(seed) };
  const result = await (await post(body)).json();
  $("#text").textContent = result.prompt + result.text;
}));

// -------------------------------------------------------------------------------------------------- forecaster
async function loadSeries() {
  const response = await fetch(current.inputs.series);
  if (!response.ok) {
    $("#series-source").textContent = `${(await failure(response)).message} Paste at least ${current.inputs.window}` +
      " values above, comma-separated.";
    return;
  }
  const data = await response.json();
  $("#series").value = data.series.join(", ");
  $("#series-source").textContent = `The card's series (${data.series.length} values, ${data.source}); ` +
    `the model reads the last ${current.inputs.window}.`;
  runForecast();
}

function runForecast() {
  attempt($("#plot"), async () => {
    const series = $("#series").value.split(/[\s,;]+/).filter((v) => v !== "").map(Number);
    const result = await (await post({ series, steps: Number($("#steps").value) })).json();
    $("#plot").innerHTML = plot(series, result.forecast, result.seasonal_naive);
  });
}
$("#forecast").addEventListener("click", runForecast);

// An inline SVG line chart: the history, the model's forecast after it, and the seasonal-naive one dashed.
function plot(history, forecast, naive) {
  const W = 720, H = 300, pad = 40;
  const all = history.concat(forecast, naive);
  const lo = Math.min(...all), hi = Math.max(...all), n = history.length + forecast.length;
  const x = (i) => pad + (W - 2 * pad) * i / Math.max(1, n - 1);
  const y = (v) => H - pad - (H - 2 * pad) * (v - lo) / Math.max(1e-9, hi - lo);
  const line = (values, start, cls) => {
    const pts = values.map((v, i) => `${x(start + i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    return `<polyline class="${cls}" points="${pts}"/>`;
  };
  const last = history.length - 1;
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="forecast plot">
    <line class="axis" x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}"/>
    <line class="axis" x1="${x(last)}" y1="${pad / 2}" x2="${x(last)}" y2="${H - pad}"/>
    <text x="4" y="${y(hi) + 4}">${hi.toFixed(0)}</text><text x="4" y="${y(lo) + 4}">${lo.toFixed(0)}</text>
    <text x="${x(last) + 4}" y="${pad / 2 + 10}">forecast →</text>
    ${line(history, 0, "history")}
    ${line([history[last]].concat(naive), last, "naive")}
    ${line([history[last]].concat(forecast), last, "forecast")}
    <text x="${W - pad - 200}" y="${H - 8}"><tspan class="legend-model">— model</tspan>
      <tspan class="legend-naive" dx="12">- - seasonal naive</tspan></text>
  </svg>`;
}

init().catch((err) => status(`Could not list the models: ${err.message}`));
