// The imaging and AI review app: a SMART app on fhirclient. Launch page (launch.html) starts
// the authorization; the app page (index.html) shows the patient's studies with thumbnails, a
// Cornerstone3D viewer (scroll a series, window/level), the AI reports beside their images
// with approve/reject, and lab results as a table and a Chart.js trend per test.
import FHIR from "fhirclient";
import { Chart, registerables } from "chart.js";
import { viewer } from "./viewer.js";

Chart.register(...registerables);

const AI_REPORT = "urn:interop:ai:report";
const AI_OBSERVATION = "urn:interop:ai:observation";
const UID = "urn:dicom:uid";
const ABNORMAL = new Set(["H", "L", "A", "HH", "LL", "AA", "POS", "HU", "LU", ">", "<"]);
const CRITICAL = new Set(["HH", "LL", "AA"]);

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
};

function status(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.className = error ? "status error" : "status";
}

async function launch() {
  const config = await (await fetch("config.json")).json();
  const params = new URLSearchParams(location.search);
  // a CDS card's link names what to open (?focus=DiagnosticReport/...): kept for the app page
  if (params.get("focus")) sessionStorage.setItem("interop-imaging-focus", params.get("focus"));
  // `launch` belongs to an EHR launch only; opened directly, the user picks the patient
  const scope = params.get("launch") ? config.scope : config.scope.split(" ").filter((s) => s !== "launch").join(" ");
  await FHIR.oauth2.authorize({
    clientId: config.clientId,
    scope,
    redirectUri: "./",
    completeInTarget: true, // in OpenEMR's iframe too, the app opens where it was launched
    iss: params.get("iss") || config.fhirBase,
  });
}

function text(concept) {
  if (!concept) return "";
  if (concept.text) return concept.text;
  const c = (concept.coding || []).find((c) => c.display || c.code);
  return c ? c.display || c.code : "";
}

function value(obs) {
  const q = obs.valueQuantity;
  if (q && q.value !== undefined) return { num: q.value, text: `${q.comparator || ""}${q.value} ${q.unit || q.code || ""}`.trim() };
  if (obs.valueCodeableConcept) return { text: text(obs.valueCodeableConcept) };
  if (obs.valueString !== undefined) return { text: obs.valueString };
  return { text: "" };
}

function flags(obs) {
  return (obs.interpretation || []).flatMap((i) => (i.coding || []).map((c) => c.code)).filter(Boolean);
}

function when(resource) {
  return resource.effectiveDateTime || resource.issued || resource.started || (resource.meta || {}).lastUpdated || "";
}

class App {
  constructor(client) {
    this.client = client;
    this.root = client.state.serverUrl.replace(/\/fhir\/?$/, "");
    this.token = () => client.state.tokenResponse.access_token;
    this.viewer = viewer($("#viewport"), this);
    this.charts = null;
  }

  async fetchAuthed(url, accept) {
    const response = await fetch(url, { headers: { Authorization: `Bearer ${this.token()}`, Accept: accept } });
    if (!response.ok) throw new Error(`${response.status} ${url}`);
    return response;
  }

  async start() {
    const patientId = this.client.patient.id;
    if (!patientId) {
      status("No patient in context: launch the app from a patient's chart.", true);
      return;
    }
    const patient = await this.client.patient.read();
    const name = (patient.name || [])[0] || {};
    $("#patient").textContent = [(name.given || []).join(" "), name.family].filter(Boolean).join(" ") || `Patient/${patientId}`;
    status("Loading…");
    const [studies, reports, labs] = await Promise.all([
      this.client.request(`ImagingStudy?patient=${patientId}&_sort=-started&_count=100`, { flat: true, pageLimit: 1 }),
      this.client.request(`DiagnosticReport?patient=${patientId}&_include=DiagnosticReport:result&_count=100`, { flat: true, pageLimit: 1 }),
      this.client.request(`Observation?patient=${patientId}&_sort=-date&_count=500`, { flat: true, pageLimit: 1 }),
    ]);
    this.studies = studies;
    this.renderStudies(studies);
    await this.renderReports(reports);
    this.renderLabs(labs.filter((o) => !(o.identifier || []).some((i) => i.system === AI_OBSERVATION)));
    status(`${studies.length} studies, ${this.reports.length} AI reports, ${this.labs.length} lab results`);
    const focus = sessionStorage.getItem("interop-imaging-focus") || "";
    sessionStorage.removeItem("interop-imaging-focus");
    if (focus.startsWith("ImagingStudy/")) this.openStudy(focus.split("/")[1]);
    const report = focus.startsWith("DiagnosticReport/") && document.querySelector(`.report[data-report="${CSS.escape(focus.split("/")[1])}"]`);
    if (report) {
      if (report.dataset.study) this.openStudy(report.dataset.study);
      report.classList.add("current");
      report.scrollIntoView({ block: "nearest" });
      const approve = report.querySelector(".approve");
      if (approve) approve.focus();
    }
  }

  studyUid(study) {
    const id = (study.identifier || []).find((i) => i.system === UID);
    return id ? id.value.replace(/^urn:oid:/, "") : null;
  }

  renderStudies(studies) {
    const list = $("#studies");
    list.replaceChildren();
    if (!studies.length) list.append(el("p", {}, "No imaging studies."));
    for (const study of studies) {
      const uid = this.studyUid(study);
      const img = el("img", { alt: "", class: "thumb" });
      const button = el("button", { class: "study", "data-study": study.id, on: { click: () => this.openStudy(study.id) } },
        img,
        el("span", { class: "desc" }, study.description || (study.modality || []).map((m) => m.code).join("/") || "Study"),
        el("span", { class: "date" }, (study.started || "").slice(0, 10)),
        el("span", { class: "count" }, `${study.numberOfSeries || (study.series || []).length} series, ${study.numberOfInstances || 0} images`));
      list.append(el("li", {}, button));
      const series = (study.series || []).find((s) => (s.instance || []).length);
      if (uid && series) {
        const inst = series.instance[Math.floor(series.instance.length / 2)];
        const url = `${this.root}/dicomweb/studies/${uid}/series/${series.uid}/instances/${inst.uid}/rendered`;
        this.fetchAuthed(url, "image/jpeg")
          .then((r) => r.blob())
          .then((b) => { img.src = URL.createObjectURL(b); img.dataset.loaded = "1"; })
          .catch((e) => { img.alt = "(no preview)"; img.title = e.message; });
      }
    }
  }

  openStudy(studyId) {
    const study = (this.studies || []).find((s) => s.id === studyId);
    if (!study) return;
    const uid = this.studyUid(study);
    const pick = $("#series");
    pick.replaceChildren();
    for (const series of study.series || []) {
      pick.append(el("button", { class: "series", on: { click: () => this.viewer.open(uid, series) } },
        `${series.modality ? series.modality.code : ""} ${series.description || "series " + (series.number ?? "")} (${(series.instance || []).length})`));
    }
    $("#viewer-title").textContent = study.description || `ImagingStudy/${study.id}`;
    for (const panel of document.querySelectorAll(".report")) panel.classList.toggle("current", panel.dataset.study === studyId);
    const first = (study.series || []).find((s) => (s.instance || []).length);
    if (first) this.viewer.open(uid, first);
    $("#viewer").scrollIntoView({ block: "nearest" });
  }

  async renderReports(bundle) {
    const byRef = new Map(bundle.map((r) => [`${r.resourceType}/${r.id}`, r]));
    this.reports = bundle.filter((r) => r.resourceType === "DiagnosticReport" && (r.identifier || []).some((i) => i.system === AI_REPORT));
    const box = $("#reports");
    box.replaceChildren();
    if (!this.reports.length) box.append(el("p", {}, "No AI reports."));
    for (const report of this.reports) box.append(await this.reportPanel(report, byRef));
  }

  async reportPanel(report, byRef) {
    const results = (report.result || []).map((r) => byRef.get(r.reference)).filter(Boolean);
    const deviceRef = results.map((o) => (o.device || {}).reference).find(Boolean);
    let model = text(report.code);
    if (deviceRef) {
      try {
        const device = await this.client.request(deviceRef);
        const name = ((device.deviceName || [])[0] || {}).name;
        const version = ((device.version || [])[0] || {}).value;
        if (name) model = `${name} ${version || ""}`.trim();
      } catch (e) { /* the model stays as the report names it */ }
    }
    const studyRef = ((report.imagingStudy || [])[0] || {}).reference || "";
    const panel = el("section", { class: "report", "data-report": report.id, "data-study": studyRef.split("/")[1] || "", "aria-label": `AI report ${report.id}` });
    const statusBadge = el("span", { class: `badge ${report.status}`, "data-status": report.status }, report.status);
    panel.append(
      el("h3", { "data-model": model }, `AI report — ${model} `, statusBadge),
      el("p", { class: "conclusion" }, report.conclusion || "(no conclusion)"),
      el("table", { class: "findings" },
        el("thead", {}, el("tr", {}, el("th", {}, "Finding"), el("th", {}, "Value"), el("th", {}, "Flag"))),
        el("tbody", {}, results.map((o) => el("tr", { class: flags(o).some((f) => ABNORMAL.has(f)) ? "abnormal" : "" },
          el("td", {}, text(o.code)), el("td", {}, value(o).text), el("td", {}, flags(o).join(", ")))))),
      await this.provenance(report, model));
    if (studyRef) panel.append(el("button", { on: { click: () => this.openStudy(studyRef.split("/")[1]) } }, "Show images"));
    if (report.status === "preliminary") {
      const reason = el("input", { type: "text", "aria-label": "Reason", placeholder: "Reason (required to reject)", class: "reason" });
      const approve = el("button", { class: "approve", on: { click: () => this.review(report, true, reason.value, panel) } }, "Approve");
      const reject = el("button", { class: "reject", on: { click: () => this.review(report, false, reason.value, panel) } }, "Reject");
      panel.append(el("div", { class: "actions" }, reason, approve, reject));
    }
    return panel;
  }

  /** Who made the report and who reviewed it: its Provenance records, newest last. */
  async provenance(report, model) {
    let records = null;
    try {
      records = await this.client.request(`Provenance?target=DiagnosticReport/${report.id}&_sort=recorded`, { flat: true, pageLimit: 1 });
    } catch (e) { /* this launch may not read Provenance */ }
    return el("p", { class: "provenance", "data-count": records === null ? "" : String(records.length) }, "Provenance: ", records === null ? "not readable with this launch's access" : records.length ? records.map((p) => {
      const agent = (p.agent || [])[0] || {};
      const who = (agent.who || {}).reference || (agent.who || {}).display || "?";
      const act = (((p.activity || {}).coding || [])[0] || {}).code || "";
      return `${(p.recorded || "").slice(0, 19)} ${act} by ${who}`;
    }).join("; ") : `none visible (generated ${(report.issued || "").slice(0, 16).replace("T", " ")} by ${model})`);
  }

  async review(report, approve, reason, panel) {
    if (!approve && !reason.trim()) {
      status("A rejection needs a reason.", true);
      $(".reason", panel).focus();
      return;
    }
    const parameter = reason.trim() ? [{ name: "reason", valueString: reason.trim() }] : [];
    try {
      const updated = await this.client.request({
        url: `DiagnosticReport/${report.id}/$${approve ? "approve" : "reject"}`,
        method: "POST",
        body: JSON.stringify({ resourceType: "Parameters", parameter }),
        headers: { "Content-Type": "application/fhir+json" },
      });
      const badge = $(".badge", panel);
      badge.textContent = updated.status;
      badge.dataset.status = updated.status;
      badge.className = `badge ${updated.status}`;
      const actions = $(".actions", panel);
      if (actions) actions.remove();
      $(".provenance", panel).replaceWith(await this.provenance(updated, $("h3", panel).dataset.model || ""));
      status(`Report ${approve ? "approved" : "rejected"}: ${updated.status}`);
    } catch (e) {
      status(`Could not ${approve ? "approve" : "reject"}: ${e.message}`, true);
    }
  }

  renderLabs(labs) {
    this.labs = labs;
    const body = $("#labs tbody");
    body.replaceChildren();
    const tests = new Map();
    for (const obs of labs) {
      const name = text(obs.code) || "unknown";
      const v = value(obs);
      const f = flags(obs);
      const abnormal = f.some((x) => ABNORMAL.has(x));
      const source = el("button", { class: "source", on: { click: () => this.showSource(obs) } }, "Source");
      body.append(el("tr", { class: abnormal ? (f.some((x) => CRITICAL.has(x)) ? "abnormal critical" : "abnormal") : "" },
        el("td", {}, name), el("td", {}, v.text), el("td", {}, abnormal ? `⚑ ${f.join(", ")}` : f.join(", ")),
        el("td", {}, when(obs).slice(0, 16).replace("T", " ")), el("td", {}, source)));
      if (v.num !== undefined) {
        if (!tests.has(name)) tests.set(name, []);
        tests.get(name).push({ x: when(obs), y: v.num, unit: (obs.valueQuantity || {}).unit || "" });
      }
    }
    const select = $("#trend-test");
    select.replaceChildren(...[...tests.keys()].map((n) => el("option", { value: n }, n)));
    select.onchange = () => this.trend(tests.get(select.value), select.value);
    if (tests.size) this.trend(tests.get(select.value), select.value);
  }

  trend(points, name) {
    points = [...points].sort((a, b) => a.x.localeCompare(b.x));
    if (this.charts) this.charts.destroy();
    this.charts = new Chart($("#trend"), {
      type: "line",
      data: { labels: points.map((p) => p.x.slice(0, 16).replace("T", " ")), datasets: [{ label: `${name} (${points[0]?.unit || ""})`, data: points.map((p) => p.y), borderColor: "#1f6feb", tension: 0.1 }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false },
    });
  }

  async showSource(obs) {
    const dialog = $("#source");
    const pre = $("pre", dialog);
    pre.textContent = "Loading…";
    dialog.showModal();
    try {
      const provs = await this.client.request(`Provenance?target=Observation/${obs.id}`, { flat: true, pageLimit: 1 });
      const control = provs.flatMap((p) => p.entity || []).map((e) => ((e.what || {}).identifier || {}).value).find(Boolean);
      if (!control) { pre.textContent = "No source message is recorded for this result."; return; }
      const list = await (await this.fetchAuthed(`${this.root}/hl7/messages?control=${encodeURIComponent(control)}&_count=1`, "application/json")).json();
      const first = (list.messages || [])[0];
      if (!first) { pre.textContent = `Message ${control} is not in the inbox.`; return; }
      const message = await (await this.fetchAuthed(`${this.root}/hl7/messages/${first.id}`, "application/json")).json();
      pre.textContent = message.raw.replace(/\r/g, "\n");
    } catch (e) {
      pre.textContent = `The source message is not available to you (${e.message}).`;
    }
  }
}

async function main() {
  if (document.body.dataset.page === "launch") {
    await launch();
    return;
  }
  const client = await FHIR.oauth2.ready();
  const app = new App(client);
  window.imagingApp = app;
  await app.start();
}

main().catch((e) => status(`The app could not start: ${e.message}`, true));
