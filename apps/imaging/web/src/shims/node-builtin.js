// vtk.js (under Cornerstone3D) pulls in an XML writer that requires Node's `url` and
// `events`; the viewer never writes XML, so in the browser they are empty modules.
export default {};
