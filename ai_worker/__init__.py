"""Celery app and tasks that run model plugins on new imaging studies and write results back."""
