"""The Celery executor: the app, the task graph, thin task adapters, the run records in Redis, the client."""
