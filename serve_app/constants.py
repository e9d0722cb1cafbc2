"""Every tunable and environment variable of the data plane, with its unit.

Environment variables are prefixed ``YOLOSERVE_``. Ultralytics' own switches
(``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL``) are forced here, before any module imports
ultralytics, so no replica ever downloads weights or pip-installs at run time.
"""

from __future__ import annotations

import os

ULTRALYTICS_ENV: dict[str, str] = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
}
for _key, _value in ULTRALYTICS_ENV.items():
    os.environ[_key] = _value

# Ray Serve's switches for every Ray process, set before `ray start` (they are read once):
# HAProxy in front of the router, throughput-optimised replicas (user code and handle
# routing on the replica's loop, gRPC between replicas), a calmer controller loop and
# metrics export, room for a 20 MiB image in a gRPC call. configs/ray-serve.env holds the
# same for scripts/run_local.sh (a test keeps them equal); the KubeRay manifest sets them
# on every pod. Why each: docs/throughput.md#ray-settings.
RAY_SERVE_ENV: dict[str, str] = {
    # Ray starts every worker process (every replica) at nice 15, below its own daemons,
    # HAProxy and everything else on the node; replicas are the product here, so they
    # run at 0 and only the shared pool is lowered (SHARED_POOL_NICE): a dedicated
    # tenant's replica then outranks the pool (docs/isolation.md).
    "RAY_worker_niceness": "0",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(32 * 1024 * 1024),
    # A router replica leaving keeps serving this long for HAProxy to drop it (Ray's 30 s
    # default is for external load balancers; ours is Ray's own HAProxy, updated within
    # a second): every stop and router rollout waited 30 s.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    # A router replica that dies with requests in flight closes their connections with
    # no answer: HAProxy sends each again to another router (detection is idempotent)
    # when the whole request fits in its buffer (256 KiB: a 640-px JPEG and more; a
    # bigger upload in flight on a dying router fails). Buffers are taken per request in
    # flight (two each), not per idle connection: at most ~512 MiB at MAXCONN at once.
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    "RAY_SERVE_HAPROXY_RETRIES": "3",
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": str(256 * 1024),
    "RAY_SERVE_HAPROXY_MAXCONN": "1024",
    # A dead HAProxy is found by the proxy actor's health check (Ray: every 10 s, three
    # failures, then the actor and its HAProxy are started again: ~35 s without an
    # ingress); probed every second, it is back in a few (docs/reliability.md).
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "1",
    # ... and meanwhile a second HAProxy on the same port serves the same routes
    # (scripts/haproxy_understudy.sh): Ray's HAProxy must bind with SO_REUSEPORT too
    # (Ray passes -dR, "no SO_REUSEPORT", unless this is 1; its own proxy's default is 1).
    "SERVE_SOCKET_REUSE_PORT_ENABLED": "1",
}

APP_NAME = "yolo"
# Serve's own per-request access log is off on the hot path (a line per request per
# replica, written and tailed by the log monitor): the audit log is the record of calls.
SERVE_LOGGING: dict[str, bool] = {"enable_access_log": False}
# Requests a router may queue for a detector deployment whose replicas are all full
# before Serve refuses more (BackPressureError -> 503 overloaded, Retry-After): overload is
# a fast answer, not a growing queue.
DETECTOR_MAX_QUEUED_REQUESTS = 64
ROUTER_DEPLOYMENT = "router"
TENANT_DEPLOYMENT_PREFIX = "tenant-"
SHARED_POOL_DEPLOYMENT = "shared-pool"
LEDGER_DEPLOYMENT = "quota-ledger"
LEDGER_STANDBY_DEPLOYMENT = "quota-ledger-standby"

# Identifiers.
TENANT_ID_PATTERN = r"^[a-z][a-z0-9-]{1,31}$"
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
API_KEY_PREFIX = "yk_"
API_KEY_MAX_CHARS = 256
KEY_ID_PREFIX = "key_"
KEY_ID_PATTERN = r"^key_[a-z0-9_]{1,40}$"
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"

# Images.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# Image structure Pillow would walk in Python (images.py): a PNG's chunks (encoders
# write IDAT chunks of 8 KiB or more: ~2,600 for a 20 MiB file), a JPEG's markers before
# its scan and runs of 0xFF fill bytes between them.
MAX_PNG_CHUNKS = 8192
# Operator domains a tenant's ONNX graph may use: ONNX's own (ultralytics exports no other).
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# A tenant's ONNX graph is first built and run on one image in a child process
# (models/sandbox.py): at most this much memory beyond the child's own imports (a nano
# detector needs ~60 MiB, an x-large one ~600 MiB) and this long, else it is refused.
ONNX_LOAD_MAX_BYTES = int(os.environ.get("YOLOSERVE_ONNX_LOAD_MAX_BYTES", str(1024**3)))
ONNX_LOAD_TIMEOUT_S = float(os.environ.get("YOLOSERVE_ONNX_LOAD_TIMEOUT_S", "60"))
MAX_JPEG_MARKERS = 256
MAX_JPEG_FILL_BYTES = 64
# A JPEG's scans: libjpeg decodes every one over the whole image, so a 270 KB file of
# 1,000 tiny progressive scans took 13.8 s here. Encoders write 1 (baseline) to ~10-20
# (progressive), plus one for an EXIF thumbnail.
MAX_JPEG_SCANS = 100
# OpenCV's decoder limit, read from the environment when cv2 is first imported (by
# ultralytics, after this module). Tenant images are decoded by Pillow after a header
# check, but nothing should ever decode a bomb through cv2 either.
os.environ.setdefault("CV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
MIN_IMAGE_SIDE_PX = 8

# Detection policy bounds (the tenant's policy is clamped into these).
MIN_IMGSZ_PX = 32
MAX_IMGSZ_PX = 1920
IMGSZ_STRIDE_PX = 32
MAX_DETECTIONS = 1000
# Every request's IoU threshold is held inside this range.
MIN_IOU = 0.05
MAX_IOU = 0.95
# A PUT /v1/policy body (a few numbers) is refused over this size.
MAX_POLICY_BODY_BYTES = 4096

# Model store and loading.
# Relative file:// URIs are resolved against this folder (default: the project root).
MODEL_ROOT_ENV = "YOLOSERVE_MODEL_ROOT"
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MANIFEST_FILE = "manifest.json"
SAFETENSORS_FILE = "model.safetensors"
# A replica holds ids up to a cap and networks up to a byte budget (pool_share.model_budget)
MAX_MODELS_PER_REPLICA = int(os.environ.get("YOLOSERVE_MAX_MODELS_PER_REPLICA", "256"))
MODEL_BYTES_PER_REPLICA = int(os.environ.get("YOLOSERVE_MODEL_BYTES_PER_REPLICA", str(1024**3)))
MODEL_MEMORY_SHARE, PRELOAD_MODELS = 0.5, 4  # of a reservation; ids loaded before traffic
CACHE_DIR_ENV = "YOLOSERVE_CACHE_DIR"
CACHE_MAX_BYTES = int(os.environ.get("YOLOSERVE_CACHE_MAX_BYTES", str(4 * 1024**3)))
S3_CONNECT_TIMEOUT_S = 5.0
# Engine of CPU replicas: "onnxruntime" (compiled at load, verified against torch, torch
# if it does not match) or "torch". GPU replicas run torch fp16.
CPU_ENGINE = os.environ.get("YOLOSERVE_CPU_ENGINE", "onnxruntime")
# An idle CPU replica runs a lone image on a second session with this many threads (capped
# at the cores; 0 or 1: never; not on the pool): ~30 % sooner than on one
# (docs/throughput.md#threads-and-replicas), for the graph's memory once more.
BURST_THREADS = int(os.environ.get("YOLOSERVE_BURST_THREADS", "2"))
# A compiled graph serves only if, on the probe set, every candidate box is within this
# many pixels of torch's and every class score within this much.
ENGINE_MAX_BOX_DIFF_PX = 1.0
ENGINE_MAX_SCORE_DIFF = 0.01
ENGINE_PROBE_SEED = 20261130
S3_READ_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 3

# Batching.
BATCH_MAX_SIZE = int(os.environ.get("YOLOSERVE_BATCH_MAX_SIZE", "8"))
BATCH_WAIT_TIMEOUT_S = float(os.environ.get("YOLOSERVE_BATCH_WAIT_TIMEOUT_S", "0"))
MAX_BATCH_SIZE = 64  # the largest a config may ask for (memory grows with it)
TURN_SHARE, TURN_WINDOW = 0.5, 16  # no tenant over half a replica's last 16 turns (batcher)

# Router. Requests beyond max_replicas x target_ongoing_requests calls in flight to one
# model go together, up to BATCH_MAX_SIZE a call (inference/coalescer.py); 0: never.
COALESCE = os.environ.get("YOLOSERVE_COALESCE", "1") != "0"
DETECT_TIMEOUT_S = float(os.environ.get("YOLOSERVE_DETECT_TIMEOUT_S", "60"))
RETRY_AFTER_S = 1
# Faults (docs/reliability.md). A call whose replica died (or was unreachable) is sent
# again — to another replica or the replacement — for up to this long, waiting
# RIDE_THROUGH_FIRST_WAIT_S, then twice as long each time up to RIDE_THROUGH_MAX_WAIT_S;
# past it the client gets a 503 with Retry-After. Detection is idempotent and billed once
# by the router, so a retry is invisible to the client but for its latency.
RIDE_THROUGH_S = float(os.environ.get("YOLOSERVE_RIDE_THROUGH_S", "10"))
RIDE_THROUGH_FIRST_WAIT_S = 0.05
RIDE_THROUGH_MAX_WAIT_S = 0.5
# Serve notices a dead replica at its next health check (Ray's default: every 10 s); a
# down ledger stops admissions, a dead replica leaves a deployment short: probed this often.
LEDGER_HEALTH_CHECK_PERIOD_S = 0.5
REPLICA_HEALTH_CHECK_PERIOD_S = 1.0
# Pinned versions (not the active one) a shared tenant keeps in use on the pool within the
# window (inference/pool_share.py): cycling old versions would evict others' models.
SHARED_PINNED_VERSIONS = 2
SHARED_PIN_WINDOW_S = 60.0
MAX_CACHED_HANDLES = 4096  # per-model-id detector handles a router keeps (cleared when full)
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 64 * 1024  # multipart framing on top of the image
# client.HttpDetectionClient: call timeout, retries of a 429/503 (after Retry-After) or a
# failed connection, most wait in all, back-off between connections, connections (threads).
HTTP_CLIENT_TIMEOUT_S = 60.0
HTTP_CLIENT_RETRIES = 3
HTTP_CLIENT_MAX_WAIT_S = 30.0
HTTP_CLIENT_MAX_BACKOFF_S = 4.0
HTTP_CLIENT_MAX_IN_FLIGHT = 8
# Open Inference Protocol (http/oip.py): images per request, body (base64 is 4/3 bigger).
V2_MAX_IMAGES = 16
V2_MAX_BODY_BYTES = 2 * MAX_BODY_BYTES
MAX_FORM_PARTS = 16  # a form needs one part (the image), a few more from a browser
MAX_FORM_PART_HEADERS = 8
MAX_FORM_PART_HEADER_BYTES = 8 * 1024  # one part's header lines together
MAX_CONTENT_TYPE_CHARS = 1024
# A request body must have arrived whole this long after the handler started reading it
# (408): 20 MiB at ~6 Mbit/s. A client trickling bytes holds a router slot no longer.
BODY_READ_TIMEOUT_S = float(os.environ.get("YOLOSERVE_BODY_READ_TIMEOUT_S", "30"))
# A form body bigger than this is parsed in a worker thread, off the router's event loop
# (parsing is linear and C-speed, ~1 ms per MiB; a thread hop costs ~0.1 ms).
OFF_LOOP_BODY_BYTES = 1024 * 1024
READY_TIMEOUT_S = 120.0
# Probes come every few seconds; a recent success stands for this long.
READY_CACHE_S = 15.0

# JWT bearer tokens and JWKS documents of tenants' identity providers.
# Only asymmetric algorithms, named by the tenant's config, never by the token.
JWT_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
JWT_LEEWAY_S = 30
JWT_MAX_TOKEN_CHARS = 8192
JWT_MAX_KID_CHARS = 128
# A token without a kid is tried against at most this many keys (signature checks).
JWT_MAX_KEYS_WITHOUT_KID = 4
JWKS_CACHE_TTL_S = 300.0
# A token with an unknown kid refetches the document at most this often, per URL.
JWKS_MIN_REFETCH_S = 30.0
# Last good keys stay usable this long while the identity provider is unreachable.
JWKS_MAX_STALE_S = 3600.0
JWKS_FETCH_TIMEOUT_S = 3.0
JWKS_MAX_BYTES = 256 * 1024
JWKS_MAX_KEYS = 64

# Audit log (audit.py): strings in a record are cut to this length.
AUDIT_MAX_FIELD_CHARS = 200
# A call's action ("METHOD route"): the longest route with room to spare; a client's
# method on an unknown path is cut to fit.
AUDIT_MAX_ACTION_CHARS = 64
# Each audit file is rotated past this size, and this many rotated files are kept: at
# most 320 MiB per router replica, whatever a flood of requests (audited too) sends.
AUDIT_ROTATE_BYTES = 64 * 1024 * 1024
# A writer keeps its audit file open; once a second it checks the path still names that
# file (an operator's logrotate may have moved it) and reopens it if not.
AUDIT_RECHECK_S = 1.0
AUDIT_KEEP_FILES = 4
# Where router replicas write their audit lines (one file per replica), unless the
# router's user_config says otherwise; relative to the project root.
AUDIT_DIR = os.environ.get("YOLOSERVE_AUDIT_DIR", "var/audit")
# The tenant directory (serve_app/directory.py): a folder of the model store; how often a
# router reads its head (a revoked key or a suspension is refused within about this).
DIRECTORY_FOLDER = "_directory"
DIRECTORY_POLL_S = 0.5

# Quota ledger.
# Admission waits this long for one ledger call; a call that timed out (while Serve
# replaces a dead ledger replica, its handle holds calls with no replica to go to) or
# whose replica died is made again until LEDGER_RIDE_THROUGH_S, then the router fails
# closed (503). A ledger replica is replaced in ~4 s here (docs/reliability.md).
LEDGER_TIMEOUT_S = 2.0
LEDGER_RIDE_THROUGH_S = 8.0
# ... asked again at most this long apart: a call to the dead ledger fails at once, and
# every request that needs a grant waits for the replacement; 0.5 s between attempts
# was up to half a second of the ~3 s without answers.
LEDGER_RETRY_MAX_WAIT_S = 0.1
# The ledger runs as a primary and a warm standby (quota/failover.py): a call the leader
# has not answered in this long is offered to the other, which takes over only if the
# leader's process is gone (a live leader keeps it: the call is then waited for).
LEDGER_FAILOVER_AFTER_S = 0.3
# GET /v1/usage, GET and PUT /v1/policy (http/control.py): per tenant and router replica
# at most this many per second (bursts of CONTROL_CALLS_BURST), else 429; a usage report
# is answered from a copy at most USAGE_CACHE_S old. A tenant polling in a loop never
# queues the other tenants' admissions behind its ledger calls.
CONTROL_CALLS_PER_S = 5.0
CONTROL_CALLS_BURST = 20
USAGE_CACHE_S = 1.0
# How long a router trusts its copy of a tenant's own detection defaults (PUT /v1/policy
# on another router replica is seen within this).
TENANT_DEFAULTS_TTL_S = 2.0
# Metered usage: exported from the ledger as JSON lines this often (and on shutdown).
USAGE_EXPORT_S = float(os.environ.get("YOLOSERVE_USAGE_EXPORT_S", "30"))
USAGE_EXPORT_MAX_ROWS = 5000
USAGE_REPORT_HOURS = 24  # GET /v1/usage shows this many recent hours
# The ledger forgets a settlement's id this long after applying it (a router re-sends an
# unacknowledged settlement every ALLOWANCE_TTL_S, so a retry comes within seconds; a day
# is thousands of retries' margin), and exported usage rows once older than
# USAGE_REPORT_HOURS; both at every export (USAGE_EXPORT_S). Without it the two tables
# grew by ~4 rows/s per busy router, forever.
SETTLEMENT_IDS_KEPT_S = 24 * 3600.0
# Settlements a router keeps for retry while the ledger is unreachable.
MAX_PENDING_SETTLEMENTS = 2000
# Router-local allowances (admission.py): admissions granted in advance by the ledger
# are spent within this long or refunded; at most this many per grant, and at most
# 1/ALLOWANCE_BURST_SHARE of a rate-limited tenant's burst.
ALLOWANCE_TTL_S = 0.25
ALLOWANCE_MAX = 32
ALLOWANCE_BURST_SHARE = 4
# A grant refused for the monthly quota is asked once more after this: another router's
# unspent allowance (the month's last images) is refunded by then (it expires after
# ALLOWANCE_TTL_S and is settled at the next tick). Only a tenant at its cap waits.
MONTHLY_RECHECK_S = 3 * ALLOWANCE_TTL_S
# Refusals a router repeats on its own (quota/refusals.py): after the ledger says a
# tenant is over its rate, the router refuses it locally until the time it gave (no
# ledger call), and after a monthly refusal for at most REFUSAL_MONTHLY_REMEMBER_S
# (refunds may free the month's last images). A request that comes back inside that
# window ignored Retry-After: its 429 is held until the window ends, at most
# REFUSAL_MAX_HOLD_S, for at most REFUSAL_MAX_HELD requests per tenant per router at a
# time (held refusals occupy router slots; past that they are answered at once)
REFUSAL_MONTHLY_REMEMBER_S = MONTHLY_RECHECK_S
REFUSAL_MAX_HOLD_S = 1.0
REFUSAL_MAX_HELD = 8
# ... and at most this many in all per router (half of its 64 request slots): several
# abusive tenants together cannot fill a router with held refusals.
REFUSAL_MAX_HELD_TOTAL = 32
# Each hold is lengthened by a random 0..this: refusals held together are not released
# together (they would come back as one burst, every second).
REFUSAL_HOLD_JITTER_S = 0.25
# Refusals answered by the ingress (http/ingress_refusals.py, scripts/haproxy_loopback.sh):
# the HAProxy admin sockets are told within INGRESS_SOCKET_TIMEOUT_S or not at all (the
# router refuses by itself meanwhile); the ingress's tally is read (and cleared) every
# INGRESS_TALLY_PERIOD_S while anything was published; a published window that ended more
# than INGRESS_EXPIRED_KEEP_S ago is deleted from the map.
INGRESS_SOCKET_TIMEOUT_S = 0.5
INGRESS_TALLY_PERIOD_S = 1.0
INGRESS_EXPIRED_KEEP_S = 5.0
INGRESS_REFUSAL_MAP = "yoloserve-refused.map"
INGRESS_REFUSAL_TABLE = "yoloserve_refused"
# A router's settle loop that dies is restarted after this back-off, doubling up to the
# maximum; at shutdown the last settlement is tried this many times.
SETTLE_RESTART_MIN_S = 0.5
SETTLE_RESTART_MAX_S = 30.0
SETTLE_FLUSH_ATTEMPTS = 3
# A router killed outright leaves its journal (quota/journal.py) in this folder under the
# node's Ray session folder; the other routers on the node look for such orphans this
# often, settle them and have the ledger refund the rest of what the dead one held.
JOURNAL_FOLDER = "yoloserve-journal"
JOURNAL_SWEEP_S = 1.0
# Admissions held for a router that nobody settles for this long (it died on a node that
# is gone, with its journal) are forgotten by the ledger: they stay billed.
HOLD_ABANDONED_S = 600.0

POOL_SLOTS = 16  # a router's turns at the pool (fair_share.py) when build_app gives none
# Placement on the pool (pool_router.py): a model with this share of a caller's last
# POOL_HOT_WINDOW calls is hot (another replica once its holders are POOL_SPILL_QUEUE busier).
POOL_HOT_SHARE = 0.05
POOL_HOT_WINDOW = 256
POOL_SPILL_QUEUE = 2
POOL_PLACED_S = 3.0  # a replica sent a model counts as holding it this long
# "serve": Serve's own multiplex routing on the pool instead (for comparison: bench_pool.py)
POOL_PLACEMENT = os.environ.get("YOLOSERVE_POOL_PLACEMENT", "model-aware")
# A new pool replica loads up to PREWARM_MODELS of a peer's hottest models (asking at most
# PREWARM_ASK_S); one stopping hands over up to HANDOVER_MODELS used in HANDOVER_WINDOW_S.
PREWARM_MODELS = 8
PREWARM_ASK_S = 2.0
HANDOVER_MODELS = 16
HANDOVER_WINDOW_S = 60.0
HANDOVER_S = 10.0  # within Serve's graceful_shutdown_timeout_s (20 s)
# Detector. The pool's replicas run at this nice value (models/cpu_priority.py): a dedicated
# replica or the router gets ~10x the pool's CPU share; idle cycles go to the pool. 0: off.
SHARED_POOL_NICE = 10
WARMUP_SIDE_PX = 64
MODEL_LOAD_RETRY_AFTER_S = 30
# A version that failed to load is not tried again for this long (per replica).
FAILED_LOAD_RETRY_S = 30.0

# Moved here from the modules that use them (limits and output precision).
# A JWT subject names the caller inside its tenant in audit lines; capped.
JWT_MAX_SUBJECT_CHARS = 128
# Histogram buckets of the exported metrics.
METRIC_LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
METRIC_LOAD_BUCKETS_S = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
METRIC_BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32]
# A concurrency lease nobody releases (a router died mid-request) expires after this.
LEASE_TTL_S = 120.0
# annotate=true: JPEG quality and the longest label drawn.
ANNOTATE_JPEG_QUALITY = 90
ANNOTATE_MAX_LABEL_CHARS = 40
# Precision of detection results (pixels, confidence).
BBOX_DECIMALS = 1
CONFIDENCE_DECIMALS = 4
# Query-string bounds: class names in ?classes=, characters of a number.
MAX_CLASS_TOKENS = 1000
MAX_NUMBER_CHARS = 32
LOAD_REASON_MAX_CHARS = 300  # a failed load's reason as the operator sees it, capped
# A model manifest's class list: how many, how long each name.
MAX_CLASSES = 1000
MAX_CLASS_NAME_CHARS = 64
# Tenants' own model versions (models/uploads.py, http/models_api.py). Defaults of the
# per-tenant limits an operator may change in the app args' ``uploads``: an upload's
# bytes (weights, manifest and labelled samples together), uploaded versions kept per
# model (deleted ones do not count), uploads per tenant per rolling hour (429 past it).
UPLOAD_MAX_BYTES = 128 * 1024 * 1024
UPLOAD_MAX_VERSIONS = 10
UPLOADS_PER_HOUR = 20
# Uploads one router receives at once (one per tenant): each is held in memory (503 past).
UPLOADS_IN_FLIGHT = 4
# Labelled samples sent with an upload (models/evaluation.py): how many images.
UPLOAD_MAX_SAMPLES = 32
# Validation of an upload (models/validation.py): a Ray task in its own worker process
# (one call per worker) that loads the weights in a child process limited to this much
# memory beyond its imports, and is killed after this long.
VALIDATION_TIMEOUT_S = float(os.environ.get("YOLOSERVE_VALIDATION_TIMEOUT_S", "180"))
VALIDATION_MEMORY_BYTES = int(os.environ.get("YOLOSERVE_VALIDATION_MEMORY_BYTES", str(3 * 1024**3)))
VALIDATION_CPUS = 0.25
VALIDATION_LATENCY_RUNS = 5  # timed predicts of one probe image; the median is recorded
# Rollouts (models/rollout.py): boxes agree at this IoU (same class name); the gate wants
# the candidate's p95 latency within this ratio of the incumbent's; latencies kept per
# side for the p95 (the most recent).
ROLLOUT_MATCH_IOU = 0.5
ROLLOUT_MAX_LATENCY_RATIO = 1.5
ROLLOUT_LATENCY_SAMPLES = 2000
ROLLOUT_MAX_MIN_IMAGES = 100_000
# How often a router asks the ledger which tenants' own models changed.
MODELS_POLL_S = 0.5
