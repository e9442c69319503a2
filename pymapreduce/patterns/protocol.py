"""Protocol constants: one place for every command name and wire-level number.

Every control message is ``[header, *blobs]`` where ``header`` is msgpack
``[PROTOCOL_VERSION, command, body]``. Blobs are opaque bytes (job code, input splits,
partition data) that the broker stores and forwards without ever unpickling.
"""

# 2: SUBMIT lists its splits in a blob; attempt ids carry random bits. 3: small blobs
# share a frame, the header's fourth item naming their layout (patterns/message.py)
PROTOCOL_VERSION = 3
# the most tasks a worker process holds at once unless told otherwise (`--credit`): a
# cap, not a target; the broker fills about PREFETCH_SECONDS of work (broker/
# dispatching.py), so this binds only for tasks under a fifth of a millisecond, where
# each message's cost is shared by more tasks (benchmarks/RESULTS.md, "Bigger batches")
DEFAULT_CREDIT = 256
MAX_CREDIT = 1024  # what a broker lets a worker announce (more is taken as this)

# worker -> broker
READY = "READY"  # register (or re-register) and announce credit
DONE = "DONE"  # a batch of finished task attempts, small outputs inline
FAILED = "FAILED"  # a task attempt raised; carries the traceback text
HEARTBEAT = "HEARTBEAT"  # liveness, both ways (any message counts)
BYE = "BYE"  # a worker leaving cleanly

# broker -> worker
WELCOME = "WELCOME"  # reply to READY: where the data sink listens
TASKS = "TASKS"  # a batch of task attempts of one job
RECONNECT = "RECONNECT"  # "I do not know you": the worker must send READY again
ABANDON = "ABANDON"  # drop these attempts (job cancelled or failed, a backup won)

# client -> broker
HELLO = "HELLO"  # ask for cluster facts (workers, slots)
SUBMIT = "SUBMIT"
WATCH = "WATCH"  # subscribe to a job's status events
STATUS = "STATUS"  # request (client) and event/reply (broker)
FETCH = "FETCH"  # ask for one output partition
CANCEL = "CANCEL"
RELEASE = "RELEASE"  # the client is done with a job's outputs
JOBS = "JOBS"  # list the jobs and the workers (reply: LISTING)
LOGS = "LOGS"  # a job's task logs, request and reply (broker/logstore.py)
EVENTS = "EVENTS"  # events after a cursor, request and reply (observe/api.py)

# broker -> client
INFO = "INFO"  # reply to HELLO
ACCEPTED = "ACCEPTED"
PART = "PART"  # one output partition (blob)
LISTING = "LISTING"  # reply to JOBS
ERROR = "ERROR"  # a request could not be served: body has "code" and "message"

# data plane (worker PUSH -> broker PULL): [header, *partition blobs]
OUTPUT = "OUTPUT"

# sink daemons (sinks/, docs/sinks.md). Sink -> broker on the control socket:
SINK = "SINK"  # register (or re-register) a sink: where workers reach it
# broker -> sink: DROP {"jobs": [...]}: those jobs' segments are no longer needed
DROP = "DROP"
ASSIGN = "ASSIGN"  # broker -> sink: {"steps": [[job, step], ...]} it is to take PUTs for
# worker DEALER -> sink ROUTER: PUT {req, job, step, map, attempt, parts} + one blob per
# part, answered by STORED {req} (or ERROR); GET {req, job, step, part, segs: [[map,
# attempt], ...]}, answered by SEGS {req, missing: [map, ...]} + one blob per found segment
PUT = "PUT"
STORED = "STORED"
GET = "GET"
SEGS = "SEGS"

# Job states as the client sees them.
JOB_QUEUED = "queued"  # accepted, no task handed out yet (status only)
JOB_RUNNING = "running"
JOB_SUCCEEDED = "succeeded"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_TERMINAL = frozenset({JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED})

# Outputs at most this large ride inline in DONE; larger ones take the data plane,
# so bulk bytes never sit in front of control messages.
INLINE_OUTPUT_LIMIT = 64 * 1024

# Frames above this size are sent without copying them into ZeroMQ.
ZERO_COPY_THRESHOLD = 64 * 1024
