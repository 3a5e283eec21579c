"""Celery settings for atlaspipe, read by ``atlaspipe.pipeline.celery.app`` through ``config_from_object``.

Connection URLs are not here: they come from the environment (``ATLASPIPE_BROKER_URL``,
``ATLASPIPE_RESULT_BACKEND`` or their ``*_FILE`` variants) so that no credential is committed.
"""

from kombu import Exchange, Queue

STAGE_QUEUES = ("load", "process", "aggregate", "plot")

_exchange = Exchange("atlaspipe", type="direct")
task_queues = tuple(Queue(name, _exchange, routing_key=name) for name in STAGE_QUEUES)
task_default_queue = "load"
task_default_exchange = "atlaspipe"
task_default_routing_key = "load"
task_routes = {
    "atlaspipe.plan_run": {"queue": "load", "routing_key": "load"},
    "atlaspipe.resume_run": {"queue": "load", "routing_key": "load"},
    "atlaspipe.cancel_run": {"queue": "load", "routing_key": "load"},
    "atlaspipe.clean_runs": {"queue": "load", "routing_key": "load"},
    "atlaspipe.process_chunk": {"queue": "process", "routing_key": "process"},
    "atlaspipe.aggregate_run": {"queue": "aggregate", "routing_key": "aggregate"},
    "atlaspipe.render_piece": {"queue": "plot", "routing_key": "plot"},
    "atlaspipe.finalize_run": {"queue": "plot", "routing_key": "plot"},
}

# JSON only: a pickled message is refused before it can run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A chunk is acknowledged only once its result is stored, so a lost worker's chunk is redelivered.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Chunks are sized to take seconds; these limits catch a hung read without killing slow networks.
# They stay well under RabbitMQ's consumer_timeout (30 min by default; the shipped broker configs
# raise it), which would otherwise close the channel of a worker holding an unacked chunk.
task_soft_time_limit = 600
task_time_limit = 660

# The run records hold every outcome, so no task stores a Celery result or a STARTED state: a
# result backend that is away then cannot make Celery acknowledge a message whose outcome was not
# stored (the STARTED write happens outside the task body). Redis keeps only the chord counters.
task_ignore_result = True
task_track_started = False
result_expires = 24 * 3600
result_extended = False
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}

broker_connection_retry_on_startup = True
broker_connection_max_retries = None
broker_heartbeat = 30
broker_transport_options = {"confirm_publish": True}

# Task events cost every task three more broker messages; they are sent only when a monitor asks
# (ATLASPIPE_TASK_EVENTS=1, or Flower's enable_events at run time).
worker_send_task_events = False
task_send_sent_event = False
worker_hijack_root_logger = False
worker_max_tasks_per_child = 2000
timezone = "UTC"
enable_utc = True
