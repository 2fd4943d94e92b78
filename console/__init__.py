"""The operator console (/console): message browser, channel dashboard, FHIR browser and
administration, for users with role admin or operator."""
