// vtk.js (under Cornerstone3D) pulls in an XML writer that requires Node's `url` and
// `events`; the viewer never writes XML, so in the browser they are small stand-ins: the
// browser's own URL, and an EventEmitter base class that the writer's classes extend.
export class EventEmitter {
  on() {
    return this;
  }
  once() {
    return this;
  }
  off() {
    return this;
  }
  removeListener() {
    return this;
  }
  emit() {
    return false;
  }
}
export const URL = globalThis.URL;
export const URLSearchParams = globalThis.URLSearchParams;
export default { EventEmitter, URL, URLSearchParams };
