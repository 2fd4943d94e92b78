"""The CDS Hooks 2.0 service (/cds-services): cards from AI reports, lab results and imaging
history, computed from the FHIR data in the store, for EHRs that speak CDS Hooks."""
