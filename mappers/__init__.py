"""Pure translations into FHIR (HL7 v2, OpenEMR, DICOM, AI output): no network, no database."""
