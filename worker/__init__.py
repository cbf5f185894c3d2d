"""The Celery worker process: thin tasks over relayq's execution code."""
