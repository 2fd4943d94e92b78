// A third-party client reads a Bulk Data export: kick-off with fhir-kit-client, poll the
// status URL from Content-Location, then fetch every NDJSON file with the bearer token.
// Usage: node export.mjs BASE_URL TOKEN QUERY  -> prints {"manifest": ..., "lines": {...}}
import { Client } from 'fhir-kit-client';

const [baseUrl, token, query] = process.argv.slice(2);
const client = new Client({ baseUrl, bearerToken: token });
const asyncHeaders = { headers: { prefer: 'respond-async', accept: 'application/fhir+json' } };

const input = Object.fromEntries(new URLSearchParams(query || ''));
const kickOff = await client.operation({ name: 'export', method: 'GET', input, options: asyncHeaders });
const { response } = Client.httpFor(kickOff);
if (response.status !== 202) throw new Error(`kick-off answered ${response.status}`);
const statusUrl = response.headers.get('content-location');

let manifest;
for (let attempt = 0; attempt < 600; attempt += 1) {
  const result = await client.request(statusUrl);
  const status = Client.httpFor(result).response.status;
  if (status === 200) { manifest = result; break; }
  await new Promise((resolve) => setTimeout(resolve, 100));
}
if (!manifest) throw new Error('export did not complete');

const lines = {};
for (const output of manifest.output) {
  const headers = manifest.requiresAccessToken ? { authorization: `Bearer ${token}` } : {};
  const file = await fetch(output.url, { headers: { ...headers, accept: 'application/fhir+ndjson' } });
  if (!file.ok) throw new Error(`GET ${output.url} answered ${file.status}`);
  const text = await file.text();
  const resources = text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  lines[output.type] = (lines[output.type] || []).concat(resources);
}
process.stdout.write(JSON.stringify({ manifest, lines }));
