"""What a loaded version is: a SavedModel bundle with one signature and a tiny "graph".

Loading is modelled on TensorFlow's tensorflow/cc/saved_model/reader.cc and loader.cc (the
NOT_FOUND "Could not find SavedModel .pb or .pbtxt at supplied export directory path"
error, the tag check, the "SavedModel load for tags { serve }; Status: ..." line, the
load_attempt_count / load_latency metrics) and on TF Serving's
servables/tensorflow/saved_model_bundle_factory.cc + bundle_factory_util.cc (the batching
wrapper) and saved_model_warmup_util.cc (the warmup log). The graph computes
y = a·x + b over a DT_FLOAT tensor, as the version's card (`models.py`) says; feeding
another dtype fails as a TF placeholder does. A run longer than RunOptions.timeout_in_ms
fails as DirectSession does ("Timed out waiting for notification").

Batching is modelled on tensorflow_serving/batching/batching_session.cc and TensorFlow's
SharedBatchScheduler: tasks of one signature join an open batch while its size (the sum
of their 0th dimensions) stays within max_batch_size; a batch is taken by one of
num_batch_threads threads (shared by all models) once it is full or batch_timeout_micros
old, merged (padded up to the next allowed batch size with copies of the last task's first
row), run once and split. A full queue (max_enqueued_batches) refuses new tasks.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from e2e.standin import logs, metrics, protos, storage
from e2e.standin.configs import Batching, validate_batching
from e2e.standin.models import (
    CARD_FILE,
    SAVED_MODEL_PB,
    SAVED_MODEL_PBTXT,
    Card,
    CardError,
    parse_card,
)
from e2e.standin.status import OK, Status, StatusError, invalid_argument

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
INIT_OP_SIGNATURE = "__saved_model_init_op"


class Wedge:
    """A wedged server: once set, no RPC and no HTTP request gets an answer again."""

    def __init__(self) -> None:
        self._wedged = threading.Event()
        self._forever = threading.Event()

    def after(self, seconds: float, reason: str) -> None:
        def wedge() -> None:
            logs.warning(logs.STANDIN, f"Stopped answering requests: {reason}")
            self._wedged.set()

        timer = threading.Timer(max(seconds, 0.0), wedge)
        timer.daemon = True
        timer.start()

    def hold(self) -> None:
        """Blocks for ever when wedged (the caller's deadline is the client's business)."""
        if self._wedged.is_set():
            self._forever.wait()

    @property
    def wedged(self) -> bool:
        return self._wedged.is_set()


WEDGE = Wedge()


@dataclass
class Tensor:
    dtype: int
    shape: list[int]
    values: list[float] = field(default_factory=list)


def tensor_from_proto(proto: Any) -> Tensor | None:
    """tensorflow::Tensor::FromProto, as far as the stand-in needs it (None: parse error)."""
    if proto.dtype not in protos.DATA_TYPE_NAMES or proto.dtype == protos.DT_INVALID:
        return None
    if proto.tensor_shape.unknown_rank:
        return None
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(s < 0 for s in shape):
        return None
    count = math.prod(shape)
    if proto.dtype != protos.DT_FLOAT:
        return Tensor(proto.dtype, shape)
    values = protos.float_values(proto, count)
    if values is None:
        return None
    return Tensor(proto.dtype, shape, values)


def tensor_to_proto(tensor: Tensor, as_content: bool = False) -> Any:
    """Tensor::AsProtoField (or AsProtoTensorContent with enable_serialization_as_tensor_content)."""
    proto = protos.TensorProto(dtype=tensor.dtype)
    for size in tensor.shape:
        proto.tensor_shape.dim.add(size=size)
    if as_content:
        proto.tensor_content = struct.pack(f"<{len(tensor.values)}f", *tensor.values)
    else:
        proto.float_val.extend(tensor.values)
    return proto


def _f32(x: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _tensor_info(name: str, dtype: int) -> Any:
    info = protos.TensorInfo(name=name, dtype=dtype)
    info.tensor_shape.unknown_rank = True
    return info


def signature_defs(card: Card) -> dict[str, Any]:
    """The signatures a TF2 SavedModel exporting this function would carry."""
    serving = protos.SignatureDef(method_name=PREDICT_METHOD_NAME)
    serving.inputs[card.input].CopyFrom(_tensor_info(f"{card.signature}_{card.input}:0", protos.DT_FLOAT))
    serving.outputs[card.output].CopyFrom(_tensor_info("StatefulPartitionedCall:0", protos.DT_FLOAT))
    init = protos.SignatureDef()
    init.outputs[INIT_OP_SIGNATURE].CopyFrom(_tensor_info("NoOp", protos.DT_INVALID))
    return {card.signature: serving, INIT_OP_SIGNATURE: init}


class Session:
    """The graph's Run(): feeds by tensor name, one elementwise function.

    TensorFlow's DirectSession creates the executors of a run lazily, on the first Run()
    with a given set of feeds, fetches and targets, caches them under that key, and creates
    them with its lock released, so every run that misses the cache pays for its own
    (tensorflow/core/common_runtime/direct_session.cc, GetOrCreateExecutors). The card's
    `first_run_seconds` is that cost.
    """

    def __init__(self, card: Card, registry: metrics.Registry) -> None:
        self.card = card
        self.feed = f"{card.signature}_{card.input}:0"
        self.fetch = "StatefulPartitionedCall:0"
        self._lock = threading.Lock()
        self._runs = 0
        self._executors: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()

    def _get_or_create_executors(self, feeds: dict[str, Tensor], fetches: list[str]) -> None:
        key = (tuple(sorted(feeds)), tuple(sorted(fetches)))
        with self._lock:
            if key in self._executors or self.card.first_run_seconds <= 0:
                return
        time.sleep(self.card.first_run_seconds)
        with self._lock:
            self._executors.add(key)

    def _next_run_fails(self) -> bool:
        with self._lock:
            n = self._runs
            self._runs += 1
        rate = self.card.error_rate
        return math.floor((n + 1) * rate) > math.floor(n * rate)

    def run(self, feeds: dict[str, Tensor], fetches: list[str], timeout_ms: int) -> tuple[Status, list[Tensor]]:
        for name in feeds:
            if name != self.feed:
                return invalid_argument(f"Tensor {name}, specified in either feed_devices or fetch_devices was not in the Graph"), []
        x = feeds.get(self.feed)
        if x is None:
            return invalid_argument(
                f"You must feed a value for placeholder tensor '{self.feed.split(':')[0]}' with dtype float"
            ), []
        if x.dtype != protos.DT_FLOAT:
            return invalid_argument(
                f"Expects arg[0] to be float but {protos.data_type_string(x.dtype)} is provided"
            ), []
        self._get_or_create_executors(feeds, fetches)
        latency = self.card.latency_seconds
        if timeout_ms > 0 and latency > timeout_ms / 1000:
            time.sleep(timeout_ms / 1000)
            return Status("DEADLINE_EXCEEDED", "Timed out waiting for notification"), []
        if latency > 0:
            time.sleep(latency)
        if self._next_run_fails():
            return self.card.request_error, []
        a, b = _f32(self.card.a), _f32(self.card.b)
        y = [_f32(_f32(a * v) + b) for v in x.values]
        return OK, [Tensor(protos.DT_FLOAT, list(x.shape), y) for _ in fetches]


@dataclass
class _Task:
    feeds: dict[str, Tensor]
    size: int
    enqueued: float
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    status: Status = OK
    outputs: list[Tensor] = field(default_factory=list)


@dataclass
class _Batch:
    tasks: list[_Task]
    size: int
    opened: float
    closed: bool = False


class _Queue:
    def __init__(self, session: Session, fetches: list[str], batching: Batching) -> None:
        self.session = session
        self.fetches = fetches
        self.options = batching
        self.batches: list[_Batch] = []


class BatchScheduler:
    """SharedBatchScheduler: one pool of batch threads for every queue of every model."""

    def __init__(self, batching: Batching, registry: metrics.Registry) -> None:
        self.batching = batching
        self.registry = registry
        self._cond = threading.Condition()
        self._queues: list[_Queue] = []
        for i in range(max(batching.num_batch_threads, 1)):
            threading.Thread(target=self._work, name=f"{batching.thread_pool_name}_{i}", daemon=True).start()

    def add_queue(self, session: Session, fetches: list[str]) -> _Queue:
        with self._cond:
            queue = _Queue(session, fetches, self.batching)
            self._queues.append(queue)
            return queue

    def remove_queue(self, queue: _Queue) -> None:
        with self._cond:
            if queue in self._queues:
                self._queues.remove(queue)

    def schedule(self, queue: _Queue, task: _Task) -> Status:
        limit = self.batching.max_batch_size
        if task.size > limit:
            return invalid_argument(f"Task size {task.size} is larger than maximum input batch size {limit}")
        with self._cond:
            batches = queue.batches
            open_batch = batches[-1] if batches and not batches[-1].closed else None
            if open_batch is not None and open_batch.size + task.size > limit:
                open_batch.closed = True
                open_batch = None
            if open_batch is None:
                if len(batches) >= self.batching.max_enqueued_batches:
                    return Status(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                open_batch = _Batch([], 0, time.monotonic())
                batches.append(open_batch)
            open_batch.tasks.append(task)
            open_batch.size += task.size
            if open_batch.size >= limit:
                open_batch.closed = True
            self._cond.notify_all()
        return OK

    def _ready_batch(self) -> tuple[_Queue, _Batch] | float | None:
        """A batch to process, else the seconds until an open batch times out (or None)."""
        now = time.monotonic()
        timeout = self.batching.batch_timeout_micros / 1e6
        wait: float | None = None
        for queue in self._queues:
            if not queue.batches:
                continue
            batch = queue.batches[0]
            if batch.closed or now - batch.opened >= timeout:
                queue.batches.pop(0)
                return queue, batch
            left = batch.opened + timeout - now
            wait = left if wait is None else min(wait, left)
        return wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    found = self._ready_batch()
                    if isinstance(found, tuple):
                        queue, batch = found
                        break
                    self._cond.wait(found)
            self._process(queue, batch)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        """BatchingSession::ProcessBatch."""
        dequeued = time.monotonic()
        live: list[_Task] = []
        for task in batch.tasks:
            self.registry.observe(
                metrics.QUEUING_LATENCY, (self.batching.thread_pool_name,), (dequeued - task.enqueued) * 1e6
            )
            live.append(task)
        deadlines = [t.deadline for t in live]
        if all(d is not None and d <= dequeued for d in deadlines):
            self._finish(live, Status("RESOURCE_EXHAUSTED", "Run() timeout exceeded while waiting in batching queue"), None)
            return
        finite = [d for d in deadlines if d is not None]
        timeout_ms = 0 if len(finite) < len(deadlines) else int((max(finite) - dequeued) * 1000)
        allowed = self.batching.allowed_batch_sizes
        padded = next((s for s in allowed if s >= batch.size), batch.size) if allowed else batch.size
        metrics.record_processed_batch(self.registry, batch.size, padded)
        merged: dict[str, Tensor] = {}
        for name in live[0].feeds:
            parts = [t.feeds[name] for t in live]
            inner = parts[0].shape[1:]
            if any(p.shape[1:] != inner for p in parts) or any(p.dtype != parts[0].dtype for p in parts):
                self._finish(
                    live,
                    invalid_argument(
                        f"Tensors with name '{name}' from different tasks have different shapes "
                        "and padding is turned off.Set pad_variable_length_inputs to true, or "
                        "ensure that all tensors with the same name have equal dimensions "
                        "starting with the first dim."
                    ),
                    None,
                )
                return
            values = [v for p in parts for v in p.values]
            row = math.prod(inner)
            values += parts[-1].values[:row] * (padded - batch.size)
            merged[name] = Tensor(parts[0].dtype, [padded, *inner], values)
        status, outputs = queue.session.run(merged, queue.fetches, timeout_ms)
        self.registry.increment(metrics.WRAPPED_RUN_COUNT, ())
        self._finish(live, status, outputs)

    @staticmethod
    def _finish(tasks: list[_Task], status: Status, outputs: list[Tensor] | None) -> None:
        offset = 0
        for task in tasks:
            task.status = status
            if status.ok and outputs is not None:
                split = []
                for out in outputs:
                    row = math.prod(out.shape[1:])
                    split.append(
                        Tensor(out.dtype, [task.size, *out.shape[1:]], out.values[offset * row : (offset + task.size) * row])
                    )
                task.outputs = split
            offset += task.size
            task.done.set()


class BatchingSession:
    """A session whose Run() calls are batched (one queue per signature)."""

    def __init__(self, session: Session, scheduler: BatchScheduler, registry: metrics.Registry) -> None:
        self.card = session.card
        self.feed, self.fetch = session.feed, session.fetch
        self._scheduler = scheduler
        self._registry = registry
        self._queue = scheduler.add_queue(session, [session.fetch])

    def close(self) -> None:
        self._scheduler.remove_queue(self._queue)

    def run(self, feeds: dict[str, Tensor], fetches: list[str], timeout_ms: int) -> tuple[Status, list[Tensor]]:
        if not feeds:
            return invalid_argument("Batching Run() must have at least one input tensor"), []
        sizes = set()
        for tensor in feeds.values():
            if not tensor.shape:
                return invalid_argument("Batching Run() input tensors must have at least one dimension"), []
            sizes.add(tensor.shape[0])
        if len(sizes) > 1:
            return invalid_argument("Batching Run() input tensors must have equal 0th-dimension size"), []
        for tensor in feeds.values():
            metrics.record_input_batch(self._registry, tensor.shape[0])
        now = time.monotonic()
        task = _Task(feeds, sizes.pop(), now, now + timeout_ms / 1000 if timeout_ms > 0 else None)
        status = self._scheduler.schedule(self._queue, task)
        if not status.ok:
            return status, []
        task.done.wait()
        return task.status, task.outputs


@dataclass
class Servable:
    """A loaded SavedModelBundle."""

    name: str
    version: int
    path: str
    card: Card
    signatures: dict[str, Any]
    session: Session | BatchingSession

    def became_available(self) -> None:
        if self.card.hang_after_seconds is not None:
            WEDGE.after(
                self.card.hang_after_seconds,
                f"servable {{name: {self.name} version: {self.version}}} hangs "
                f"{self.card.hang_after_seconds:g} s after it became available",
            )


@dataclass(frozen=True)
class LoadOptions:
    saved_model_tags: tuple[str, ...]
    enable_model_warmup: bool
    batching: Batching | None
    registry: metrics.Registry
    scheduler: BatchScheduler | None


class SavedModelLoader:
    """The loader SavedModelBundleSourceAdapter makes for one version directory."""

    def __init__(self, name: str, version: int, path: str, options: LoadOptions) -> None:
        self.name, self.version, self.path = name, version, path
        self.options = options
        self.attempts = 0
        self._servable: Servable | None = None

    def _tags(self) -> str:
        return " ".join(self.options.saved_model_tags)

    def _fail(self, status: Status, started: float) -> tuple[Status, None]:
        took = int((time.monotonic() - started) * 1e6)
        logs.info(
            f"{logs.LOADER}:462",
            f"SavedModel load for tags {{ {self._tags()} }}; Status: fail: {status}. Took {took} microseconds.",
        )
        self.options.registry.increment(metrics.LOAD_ATTEMPT_COUNT, (self.path, "fail"))
        return status, None

    def load(self) -> tuple[Status, Servable | None]:
        started = time.monotonic()
        logs.info(f"{logs.READER}:83", f"Reading SavedModel from: {self.path}")
        try:
            has_pb = any(
                storage.file_exists(storage.join(self.path, f)).ok for f in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT)
            )
        except StatusError as e:
            return self._fail(e.status, started)
        if not has_pb:
            return self._fail(
                Status(
                    "NOT_FOUND",
                    "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
                    f"{self.path}. Check that the directory exists and that you have the right "
                    "permissions for accessing it.",
                ),
                started,
            )
        try:
            card = parse_card(json.loads(storage.read_file(storage.join(self.path, CARD_FILE))))
        except (StatusError, ValueError, CardError) as e:
            # Not a TF behaviour: a SavedModel the stand-in cannot emulate fails loudly.
            message = e.status.message if isinstance(e, StatusError) else str(e)
            logs.error(logs.STANDIN, f"The stand-in cannot serve {self.path}: {CARD_FILE}: {message}")
            return self._fail(Status("FAILED_PRECONDITION", f"TF Serving stand-in: {CARD_FILE} in {self.path}: {message}"), started)
        self.attempts += 1
        logs.info(f"{logs.READER}:51", f"Reading meta graph with tags {{ {self._tags()} }}")
        if set(self.options.saved_model_tags) != {"serve"}:
            return self._fail(
                Status(
                    "NOT_FOUND",
                    f"Could not find meta graph def matching supplied tags: {{ {self._tags()} }}. "
                    "To inspect available tag-sets in the SavedModel, please use the SavedModel "
                    "CLI: `saved_model_cli`",
                ),
                started,
            )
        logs.info(f"{logs.READER}:146", f"Reading SavedModel debug info (if present) from: {self.path}")
        if card.load_seconds > 0:
            time.sleep(card.load_seconds)
        failing = card.load_error is not None and (
            card.load_error_attempts is None or self.attempts <= card.load_error_attempts
        )
        if failing and card.load_error is not None:
            return self._fail(card.load_error, started)
        logs.info(f"{logs.LOADER}:325", "Restoring SavedModel bundle.")
        took = int((time.monotonic() - started) * 1e6)
        logs.info(
            f"{logs.LOADER}:462",
            f"SavedModel load for tags {{ {self._tags()} }}; Status: success: OK. Took {took} microseconds.",
        )
        self.options.registry.increment(metrics.LOAD_ATTEMPT_COUNT, (self.path, "success"))
        self.options.registry.increment(metrics.LOAD_LATENCY, (self.path,), took)
        graph = Session(card, self.options.registry)
        session: Session | BatchingSession = graph
        if self.options.batching is not None and self.options.scheduler is not None:
            logs.info(f"{logs.BUNDLE_FACTORY}:104", "Wrapping session to perform batch processing")
            invalid = validate_batching(self.options.batching)
            if invalid is not None:
                return invalid, None
            session = BatchingSession(graph, self.options.scheduler, self.options.registry)
        if self.options.enable_model_warmup:
            warmup = storage.join(self.path, "assets.extra/tf_serving_warmup_requests")
            if storage.file_exists(warmup).ok:
                logs.warning(logs.STANDIN, f"Warmup records at {warmup} are not replayed by the stand-in")
            else:
                logs.info(f"{logs.WARMUP}:86", f"No warmup data file found at {warmup}")
        self._servable = Servable(self.name, self.version, self.path, card, signature_defs(card), session)
        return OK, self._servable

    def unload(self) -> None:
        if self._servable is not None and isinstance(self._servable.session, BatchingSession):
            self._servable.session.close()
        self._servable = None


