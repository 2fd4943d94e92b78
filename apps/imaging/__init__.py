"""The imaging and AI review app (/apps/imaging): a SMART app on `fhirclient`, built from
apps/imaging/web by esbuild into static/app.js, which is committed as package data."""
