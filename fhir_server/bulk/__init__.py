"""FHIR Bulk Data Access 2.0: `$export` and `$import` as background jobs.

`operations` answers the HTTP side (kick-off, status, files, cancel); `export` and `importer`
are the jobs, plain functions of a job id run by `jobs.JobRunner` (an in-process thread pool
in the embedded default; `jobs.run_job` is the one call a Celery task makes instead).
"""
