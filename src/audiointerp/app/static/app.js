// The page: fill the choices from /api/models, post the form, poll the job, show the result.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

function showClasses() {
  const model = models.find((m) => m.name === $("model").value);
  const target = $("target");
  target.replaceChildren(option("", "the prediction"));
  const choices = model && model.any_target ? model.classes : [];
  for (const name of choices) target.append(option(name, name));
  target.disabled = Boolean(model) && !model.any_target;
  target.title = target.disabled ? `${model.method} explains only the predicted class` : "";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function showProgress(job) {
  $("progress").hidden = false;
  const bar = $("progress-bar");
  if (job.state === "queued") {
    bar.removeAttribute("value");
    $("progress-text").textContent = `waiting: ${job.position} ahead`;
  } else if (job.windows > 0) {
    bar.value = job.windows_done / job.windows;
    $("progress-text").textContent = `window ${job.windows_done} of ${job.windows}`;
  } else {
    bar.removeAttribute("value");
    $("progress-text").textContent = job.state === "running" ? "explaining" : "uploading";
  }
}

function showResult(result) {
  $("predicted").textContent = result.predicted;
  $("probability").textContent = result.probability.toFixed(3);
  $("explained").textContent = `${result.target} with ${result.model} (${result.method})`;
  $("result-source").textContent =
    `${result.source}: ${result.duration_s.toFixed(2)} s at ${result.sample_rate} Hz`;
  const rows = result.top_k.map((entry) => {
    const row = document.createElement("tr");
    if (entry.class === result.target) row.className = "explained";
    const name = document.createElement("td");
    name.textContent = entry.class;
    const cell = document.createElement("td");
    cell.className = "p";
    const meter = document.createElement("meter");
    meter.value = entry.probability;
    cell.append(entry.probability.toFixed(3), meter);
    row.append(name, cell);
    return row;
  });
  $("top-k").tBodies[0].replaceChildren(...rows);
  for (const figure of document.querySelectorAll("#result figure")) {
    const kind = figure.dataset.kind;
    const audio = figure.querySelector("audio");
    if (audio) audio.src = result.audio[kind];
    figure.querySelector("img").src = result.images[kind];
  }
  $("result").hidden = false;
}

async function poll(url) {
  for (;;) {
    const response = await fetch(url);
    const job = await response.json();
    if (!response.ok) throw new Error(job.error || response.statusText);
    if (job.state === "done") return job.result;
    if (job.state === "error") throw new Error(job.error);
    showProgress(job);
    await new Promise((done) => setTimeout(done, 250));
  }
}

async function explain(event) {
  event.preventDefault();
  $("error").hidden = true;
  if (!$("file").files.length && !$("example").value) {
    showError("Choose an audio file or a demo mixture first.");
    return;
  }
  $("explain").disabled = true;
  showProgress({state: "uploading", windows: 0});
  try {
    const form = new FormData($("explain-form"));
    if (!$("file").files.length) form.delete("file");
    form.append("wait", "0");
    const response = await fetch("/api/explain", {method: "POST", body: form});
    const reply = await response.json().catch(() => ({error: response.statusText}));
    if (!response.ok) throw new Error(reply.error || response.statusText);
    showResult(await poll(reply.status_url));
  } catch (error) {
    showError(error.message);
  } finally {
    $("explain").disabled = false;
    $("progress").hidden = true;
  }
}

async function start() {
  const response = await fetch("/api/models");
  const info = await response.json();
  models = info.models;
  for (const model of models) {
    $("model").append(option(model.name, `${model.name} (${model.method})`));
  }
  showClasses();
  for (const name of info.examples) $("example").append(option(name, name));
  $("example-field").hidden = info.examples.length === 0;
  $("report-link").hidden = !info.report;
  $("limits").textContent = `WAV, FLAC, OGG or MP3; up to ${info.limits.max_upload_mb} MB and ` +
    `${info.limits.max_seconds} s. Long files are explained window by window.`;
  $("model").addEventListener("change", showClasses);
  $("file").addEventListener("change", () => { if ($("file").files.length) $("example").value = ""; });
  $("example").addEventListener("change", () => { if ($("example").value) $("file").value = ""; });
  $("explain-form").addEventListener("submit", explain);
}

start().catch((error) => showError(`Cannot reach the server: ${error.message}`));
