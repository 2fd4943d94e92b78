"""FHIR search: parameter registry, index extraction and the query compiler."""
