// The series viewer on Cornerstone3D core: a StackViewport fed by our own image loader, which
// reads each instance's uncompressed frame and its metadata through the secured DICOMweb proxy
// with the app's access token (the proxy applies the same access rules as FHIR). Scroll with
// the wheel, the slider or the arrow keys; window/level with a drag, the sliders or the keys.
import {
  RenderingEngine,
  Enums,
  imageLoader,
  metaData,
  utilities,
  init,
  setUseCPURendering,
} from "@cornerstonejs/core";

const SCHEME = "interop-wado";
const EXPLICIT_LE = "1.2.840.10008.1.2.1";
const FRAME_ACCEPT = `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_LE}`;

const tag = (json, t) => ((json[t] || {}).Value || [])[0];
const tags = (json, t) => (json[t] || {}).Value || [];

function boundaryOf(contentType) {
  const m = /boundary="?([^";]+)"?/i.exec(contentType || "");
  return m ? m[1] : null;
}

// The first part of a multipart/related body (a frame), or the body itself.
function firstPart(bytes, contentType) {
  const boundary = boundaryOf(contentType);
  if (!boundary) return bytes;
  const text = new TextDecoder("latin1");
  const marker = new TextEncoder().encode(`--${boundary}`);
  const find = (from, needle) => {
    outer: for (let i = from; i <= bytes.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  };
  const start = find(0, marker);
  const headersEnd = find(start, new Uint8Array([13, 10, 13, 10]));
  const end = find(headersEnd + 4, new TextEncoder().encode(`\r\n--${boundary}`));
  void text;
  return bytes.subarray(headersEnd + 4, end < 0 ? bytes.length : end);
}

export function viewer(element, app) {
  const meta = new Map(); // imageId -> metadata modules
  const source = new Map(); // imageId -> frame URL
  let engine = null;
  let viewport = null;
  let imageIds = [];
  const slider = document.getElementById("slice");
  const width = document.getElementById("ww");
  const center = document.getElementById("wc");
  const label = document.getElementById("slice-label");

  metaData.addProvider((type, imageId) => (meta.get(imageId) || {})[type], 10000);

  imageLoader.registerImageLoader(SCHEME, (imageId) => ({
    promise: (async () => {
      const info = meta.get(imageId);
      const response = await app.fetchAuthed(source.get(imageId), FRAME_ACCEPT);
      const bytes = firstPart(new Uint8Array(await response.arrayBuffer()), response.headers.get("content-type"));
      const { rows, columns, bitsAllocated, pixelRepresentation, photometricInterpretation } = info.imagePixelModule;
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      const raw = bitsAllocated === 16 ? (pixelRepresentation ? new Int16Array(buffer) : new Uint16Array(buffer)) : new Uint8Array(buffer);
      const { slope, intercept } = info.rescale;
      const data = new Float32Array(rows * columns);
      let min = Infinity;
      let max = -Infinity;
      for (let i = 0; i < data.length; i++) {
        const v = raw[i] * slope + intercept;
        data[i] = v;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const voxelManager = utilities.VoxelManager.createImageVoxelManager({ width: columns, height: rows, numberOfComponents: 1, scalarData: data, id: imageId });
      const voi = info.voiLutModule;
      return {
        imageId, slope: 1, intercept: 0, color: false, rgba: false, numberOfComponents: 1,
        windowCenter: voi.windowCenter[0] ?? (min + max) / 2, windowWidth: voi.windowWidth[0] ?? Math.max(1, max - min),
        voiLUTFunction: "LINEAR", dataType: "Float32Array", minPixelValue: min, maxPixelValue: max,
        rows, columns, height: rows, width: columns,
        columnPixelSpacing: info.imagePlaneModule.columnPixelSpacing, rowPixelSpacing: info.imagePlaneModule.rowPixelSpacing,
        invert: photometricInterpretation === "MONOCHROME1", photometricInterpretation,
        getPixelData: () => voxelManager.getScalarData(), voxelManager, sizeInBytes: data.byteLength, getCanvas: undefined,
      };
    })(),
  }));

  async function ensureEngine() {
    if (engine) return;
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) setUseCPURendering(true);
    await init();
    engine = new RenderingEngine("imaging-app");
    engine.enableElement({ viewportId: "main", type: Enums.ViewportType.STACK, element, defaultOptions: { background: [0, 0, 0] } });
    viewport = engine.getViewport("main");
    element.addEventListener("wheel", (e) => { e.preventDefault(); step(e.deltaY > 0 ? 1 : -1); }, { passive: false });
    element.addEventListener("keydown", onKey);
    let drag = null;
    element.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, w: +width.value, c: +center.value }; element.setPointerCapture(e.pointerId); });
    element.addEventListener("pointermove", (e) => {
      if (!drag) return;
      setVoi(Math.max(1, drag.w + (e.clientX - drag.x) * 4), drag.c + (e.clientY - drag.y) * 2);
    });
    element.addEventListener("pointerup", () => { drag = null; });
    slider.addEventListener("input", () => show(+slider.value));
    width.addEventListener("input", () => setVoi(+width.value, +center.value));
    center.addEventListener("input", () => setVoi(+width.value, +center.value));
  }

  function onKey(e) {
    const keys = { ArrowDown: () => step(1), ArrowUp: () => step(-1), PageDown: () => step(10), PageUp: () => step(-10),
      ArrowRight: () => setVoi(+width.value * 1.1, +center.value), ArrowLeft: () => setVoi(Math.max(1, +width.value / 1.1), +center.value),
      "+": () => setVoi(+width.value, +center.value + 10), "-": () => setVoi(+width.value, +center.value - 10) };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  }

  function setVoi(w, c) {
    width.value = String(Math.round(w));
    center.value = String(Math.round(c));
    if (!viewport) return;
    viewport.setProperties({ voiRange: { lower: c - w / 2, upper: c + w / 2 } });
    viewport.render();
    element.dataset.voi = `${Math.round(w)}/${Math.round(c)}`;
  }

  function step(delta) {
    show(Math.min(imageIds.length - 1, Math.max(0, viewport.getCurrentImageIdIndex() + delta)));
  }

  async function show(index) {
    await viewport.setImageIdIndex(index);
    slider.value = String(index);
    label.textContent = `Image ${index + 1} of ${imageIds.length}`;
    element.dataset.index = String(index);
  }

  async function open(studyUid, series) {
    await ensureEngine();
    const base = `${app.root}/dicomweb/studies/${studyUid}/series/${series.uid}`;
    const response = await app.fetchAuthed(`${base}/metadata`, "application/dicom+json");
    const instances = (await response.json()).sort((a, b) => (tag(a, "00200013") || 0) - (tag(b, "00200013") || 0));
    imageIds = [];
    for (const json of instances) {
      const sop = tag(json, "00080018");
      const imageId = `${SCHEME}:${series.uid}/${sop}`;
      const spacing = tags(json, "00280030").map(Number);
      const rows = tag(json, "00280010");
      const columns = tag(json, "00280011");
      meta.set(imageId, {
        imagePixelModule: { rows, columns, samplesPerPixel: tag(json, "00280002") || 1, bitsAllocated: tag(json, "00280100") || 16,
          bitsStored: tag(json, "00280101") || 16, highBit: tag(json, "00280102") || 15, pixelRepresentation: tag(json, "00280103") || 0,
          photometricInterpretation: tag(json, "00280004") || "MONOCHROME2" },
        imagePlaneModule: { rows, columns, frameOfReferenceUID: tag(json, "00200052"), imagePositionPatient: tags(json, "00200032").map(Number),
          imageOrientationPatient: tags(json, "00200037").map(Number), rowCosines: tags(json, "00200037").slice(0, 3).map(Number),
          columnCosines: tags(json, "00200037").slice(3, 6).map(Number), pixelSpacing: spacing.length ? spacing : [1, 1],
          rowPixelSpacing: spacing[0] || 1, columnPixelSpacing: spacing[1] || 1 },
        voiLutModule: { windowCenter: tags(json, "00281050").map(Number), windowWidth: tags(json, "00281051").map(Number) },
        modalityLutModule: { rescaleSlope: 1, rescaleIntercept: 0 },
        generalSeriesModule: { modality: tag(json, "00080060") || "OT", seriesInstanceUID: series.uid },
        rescale: { slope: Number(tag(json, "00281053") ?? 1), intercept: Number(tag(json, "00281052") ?? 0) },
      });
      source.set(imageId, `${base}/instances/${sop}/frames/1`);
      imageIds.push(imageId);
    }
    slider.max = String(Math.max(0, imageIds.length - 1));
    await viewport.setStack(imageIds, Math.floor(imageIds.length / 2));
    const first = meta.get(imageIds[0]);
    const w = first.voiLutModule.windowWidth[0] || 400;
    const c = first.voiLutModule.windowCenter[0] ?? 40;
    setVoi(w, c);
    await show(Math.floor(imageIds.length / 2));
    element.dataset.series = series.uid;
    element.focus();
  }

  return { open };
}
