"""The FHIR R4 REST facade and the canonical store everything writes through."""
