// tfllm's try-it page: plain browser JavaScript, no build step. It calls the server's REST API
// (GET v1/models, POST v1/models/NAME:predict) exactly as any client does; user text is only
// ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_WORDS = 200; // occlusion sends one row per word (the server's --max-batch-size caps a request)
const GENERATION_DEFAULTS = { max_new_tokens: 64, temperature: 0.8, top_k: 40, top_p: 0.9, seed: 0 };
let models = [];

function setStatus(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  let answer;
  try {
    answer = await response.json();
  } catch (e) {
    throw new Error(`HTTP ${response.status} with a body that is not JSON`);
  }
  if (!response.ok) {
    const hint = response.status === 401 ? " Paste the server's token above." : "";
    throw new Error((answer && answer.error ? answer.error : `HTTP ${response.status}`) + hint);
  }
  return answer;
}

function kindOf(model) {
  const sig = (model.signatures || {}).serving_default;
  if (!sig) return "generic";
  const inputs = Object.keys(sig.inputs);
  if (inputs.includes("prompt")) return "generate";
  if (inputs.includes("source")) return "translate";
  if (inputs.length === 1 && inputs[0] === "text" && sig.outputs.includes("probabilities")) return "classify";
  return "generic";
}

function current() {
  return models.find((m) => m.name === $("model").value);
}

async function loadModels() {
  setStatus("Loading models…");
  try {
    models = (await call("GET", "v1/models")).models;
  } catch (e) {
    models = [];
    setStatus(e.message, true);
    show();
    return;
  }
  const select = $("model");
  const previous = select.value;
  select.replaceChildren();
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = m.error ? `${m.name} (not loaded)` : `${m.name} v${m.version} (${kindOf(m)})`;
    select.appendChild(option);
  }
  if (models.some((m) => m.name === previous)) select.value = previous;
  setStatus(models.length ? `${models.length} model(s) served.` : "No models served yet: export one into the served folder.");
  show();
}

function show() {
  const model = current();
  const kind = model && !model.error ? kindOf(model) : null;
  // Generators and translators share one form: a text in, decoding options, a text out.
  const section = kind === "translate" ? "generate" : kind;
  for (const id of ["classify", "generate", "generic"]) $(id).hidden = id !== section;
  if (model && model.error) setStatus(`${model.name}: ${model.error}`, true);
  if (section === "generate") {
    $("generate-title").textContent = kind === "translate" ? "Translate" : "Generate";
    $("generate-run").textContent = kind === "translate" ? "Translate" : "Generate";
    $("prompt").placeholder = kind === "translate" ? "A sentence to translate" : "A prompt, e.g. ROMEO:";
    buildOptions(model);
  }
  if (kind === "generic") buildGeneric(model);
}

function inputField(name, spec, value) {
  const label = document.createElement("label");
  label.textContent = name + " ";
  const isString = spec.dtype === "string";
  const field = document.createElement(isString ? "textarea" : "input");
  if (!isString) {
    field.type = "number";
    field.step = spec.dtype.startsWith("float") ? "any" : "1";
  } else {
    field.rows = 2;
  }
  field.dataset.name = name;
  field.dataset.dtype = spec.dtype;
  if (value !== undefined) field.value = value;
  label.appendChild(field);
  return label;
}

function buildOptions(model) {
  const box = $("options");
  box.replaceChildren();
  const inputs = model.signatures.serving_default.inputs;
  for (const [name, spec] of Object.entries(inputs)) {
    if (name === "prompt" || name === "source") continue;
    box.appendChild(inputField(name, spec, GENERATION_DEFAULTS[name] ?? 0));
  }
}

function buildGeneric(model) {
  const box = $("generic-inputs");
  box.replaceChildren();
  const sig = model.signatures.serving_default;
  $("generic-signature").textContent = model.signatures.serving_default ? `${model.name} (serving_default)` : model.name;
  if (!sig) return;
  for (const [name, spec] of Object.entries(sig.inputs)) box.appendChild(inputField(name, spec));
}

function readFields(box) {
  const inputs = {};
  for (const field of box.querySelectorAll("[data-name]")) {
    const dtype = field.dataset.dtype;
    let value = field.value;
    if (dtype !== "string") value = dtype.startsWith("float") ? parseFloat(value) : parseInt(value, 10);
    inputs[field.dataset.name] = [value];
  }
  return inputs;
}

async function predict(model, inputs) {
  const outputs = (await call("POST", `v1/models/${encodeURIComponent(model.name)}:predict`, { inputs })).outputs;
  // TF Serving's columnar answer is the bare value when the signature has a single output.
  const names = model.signatures.serving_default.outputs;
  return names.length === 1 ? { [names[0]]: outputs } : outputs;
}

function argmax(row) {
  return row.reduce((best, v, i) => (v > row[best] ? i : best), 0);
}

async function classify() {
  const model = current();
  const text = $("text").value;
  if (!text.trim()) {
    setStatus("Type a text first.", true);
    return;
  }
  const words = text.trim().split(/\s+/).slice(0, MAX_WORDS);
  const rows = [text];
  if ($("attribute").checked && words.length > 1) {
    words.forEach((_, i) => rows.push(words.filter((_, j) => j !== i).join(" ")));
  }
  setStatus("Classifying…");
  let outputs;
  try {
    outputs = await predict(model, { text: rows });
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  const probabilities = outputs.probabilities;
  // Class names: the export answers each row's predicted label; learn each index's name from them.
  const names = {};
  probabilities.forEach((row, r) => {
    if (outputs.label) names[argmax(row)] = outputs.label[r];
  });
  const full = probabilities[0];
  const target = argmax(full);
  $("label").textContent = `Label: ${names[target] ?? "class " + target} (${full[target].toFixed(3)})`;
  const table = $("probabilities");
  table.replaceChildren();
  full.forEach((p, i) => {
    const tr = table.insertRow();
    tr.insertCell().textContent = names[i] ?? `class ${i}`;
    tr.insertCell().textContent = p.toFixed(4);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.round(200 * p)}px`;
    tr.insertCell().appendChild(bar);
  });
  const box = $("highlighted");
  box.replaceChildren();
  if (rows.length > 1) {
    const scores = words.map((_, i) => full[target] - probabilities[i + 1][target]);
    const peak = Math.max(1e-9, ...scores.map(Math.abs));
    words.forEach((word, i) => {
      const span = document.createElement("span");
      span.className = "word";
      span.textContent = word;
      span.dataset.score = scores[i].toFixed(6);
      span.title = `${word}: ${scores[i] >= 0 ? "+" : ""}${scores[i].toFixed(4)}`;
      const a = Math.abs(scores[i]) / peak;
      span.style.background = scores[i] >= 0 ? `rgba(22,163,74,${a.toFixed(3)})` : `rgba(220,38,38,${a.toFixed(3)})`;
      box.append(span, " ");
    });
  }
  setStatus("Done.");
}

async function generate() {
  const model = current();
  const prompt = $("prompt").value;
  if (!prompt) {
    setStatus("Type a text first.", true);
    return;
  }
  const translate = kindOf(model) === "translate";
  const inputs = { [translate ? "source" : "prompt"]: [prompt], ...readFields($("options")) };
  setStatus(translate ? "Translating…" : "Generating…");
  $("output").textContent = "";
  try {
    const outputs = await predict(model, inputs);
    const text = translate ? outputs.translation[0]
      : outputs.completion !== undefined ? prompt + outputs.completion[0] : outputs.text[0];
    $("output").textContent = text;
    setStatus("Done.");
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function runGeneric() {
  const model = current();
  setStatus("Running…");
  try {
    const outputs = await predict(model, readFields($("generic-inputs")));
    $("generic-output").textContent = typeof outputs === "object" && !Array.isArray(outputs)
      ? Object.entries(outputs).map(([k, v]) => `${k}: ${Array.isArray(v) && typeof v[0] === "string" ? v.join("\n") : JSON.stringify(v)}`).join("\n")
      : JSON.stringify(outputs);
    setStatus("Done.");
  } catch (e) {
    setStatus(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("tfllm-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("tfllm-token", $("token").value.trim());
    loadModels();
  });
  $("reload").addEventListener("click", loadModels);
  $("model").addEventListener("change", show);
  $("classify-run").addEventListener("click", classify);
  $("generate-run").addEventListener("click", generate);
  $("generic-run").addEventListener("click", runGeneric);
  loadModels();
});
