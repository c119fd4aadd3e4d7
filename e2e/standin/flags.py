"""tensorflow_model_server's command line, parsed as TensorFlow's flag parser parses it.

Modelled on tensorflow_serving/model_servers/main.cc (the flag list and the handling of the
parse result), tensorflow_serving/model_servers/server.h (Server::Options defaults) and
TensorFlow's xla/tsl/util/command_line_flags.cc (the parser), whose rules are:

- only `--name=value` is understood; `--name value` leaves both words unknown. A bool also
  takes `--name` alone, and `true`/`false`/`1`/`0` (case-insensitive for the words);
- integers are read like `sscanf("%d%c")`: trailing characters are an error;
- a bad value logs `Couldn't interpret value V for flag F.` (LOG(ERROR)) and the server
  prints its usage on stdout and exits with -1 (status 255);
- unknown arguments do *not* stop the server: main.cc prints `unknown argument: X` and the
  usage on stdout, then starts anyway; `--help` as the first unknown argument prints the
  usage and exits -1.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any


def schedulable_cpus() -> int:
    # port::NumSchedulableCPUs(): the CPUs in the process's affinity mask.
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class FlagSpec:
    name: str
    kind: str  # int32, int64, bool, string, float
    default: Any
    help: str


def _specs() -> list[FlagSpec]:
    cpus = schedulable_cpus()
    s = FlagSpec
    # The order of main.cc's flag_list: it decides the usage text and which flag is tried
    # first.
    return [
        s("port", "int32", 8500, "TCP port for the gRPC API (0 disables it)."),
        s("grpc_socket_path", "string", "", "UNIX socket for the gRPC API, if non-empty."),
        s("rest_api_port", "int32", 0, "Port for the HTTP/REST API (0 disables it)."),
        s("rest_api_num_threads", "int32", 4 * cpus, "Threads serving HTTP/REST requests."),
        s("rest_api_timeout_in_ms", "int32", 30000, "Timeout of HTTP/REST calls."),
        s("rest_api_enable_cors_support", "bool", False, "Add CORS headers to responses."),
        s("enable_batching", "bool", False, "Batch Predict calls."),
        s(
            "allow_version_labels_for_unavailable_models",
            "bool",
            False,
            "Allow new version labels for versions that are not available yet.",
        ),
        s("batching_parameters_file", "string", "", "BatchingParameters text proto."),
        s(
            "enable_per_model_batching_parameters",
            "bool",
            False,
            "Read batching_params.pbtxt from each SavedModel directory.",
        ),
        s("model_config_file", "string", "", "ModelServerConfig text proto (wins over --model_name)."),
        s(
            "model_config_file_poll_wait_seconds",
            "int32",
            0,
            "Seconds between reads of --model_config_file (0: read once).",
        ),
        s("model_name", "string", "default", "Model name (ignored with --model_config_file)."),
        s("model_base_path", "string", "", "Model base path (ignored with --model_config_file)."),
        s("num_load_threads", "int32", 0, "Threads loading servables (0: the manager's own)."),
        s("num_unload_threads", "int32", 0, "Threads unloading servables."),
        s("max_num_load_retries", "int32", 5, "Load retries after a first failure."),
        s("load_retry_interval_micros", "int64", 60_000_000, "Microseconds between load retries."),
        s(
            "file_system_poll_wait_seconds",
            "int32",
            1,
            "Seconds between polls for new versions (0: once, negative: never).",
        ),
        s("flush_filesystem_caches", "bool", True, "Flush file system caches after loads."),
        s("tensorflow_session_parallelism", "int64", 0, "Threads of a TensorFlow session."),
        s("tensorflow_session_config_file", "string", "", "Session ConfigProto text proto."),
        s("tensorflow_intra_op_parallelism", "int64", 0, "Intra-op threads."),
        s("tensorflow_inter_op_parallelism", "int64", 0, "Inter-op threads."),
        s("use_alts_credentials", "bool", False, "Use ALTS credentials."),
        s("ssl_config_file", "string", "", "SSLConfig text proto."),
        s("platform_config_file", "string", "", "PlatformConfigMap text proto."),
        s("per_process_gpu_memory_fraction", "float", 0.0, "GPU memory fraction per process."),
        s("saved_model_tags", "string", "serve", "Comma-separated MetaGraphDef tags to load."),
        s("grpc_channel_arguments", "string", "", "Comma-separated gRPC server arguments."),
        s("grpc_max_threads", "int32", 4 * cpus, "Maximum gRPC server threads."),
        s("enable_model_warmup", "bool", True, "Replay warmup requests at load time."),
        s("num_request_iterations_for_warmup", "int32", 0, "Warmup replays per record."),
        s("version", "bool", False, "Display version"),
        s("monitoring_config_file", "string", "", "MonitoringConfig text proto."),
        s(
            "remove_unused_fields_from_bundle_metagraph",
            "bool",
            True,
            "Drop unused MetaGraphDef fields.",
        ),
        s("prefer_tflite_model", "bool", False, "Prefer model.tflite over saved_model.pb."),
        s("num_tflite_pools", "int32", cpus, "TFLite interpreter pools."),
        s("num_tflite_interpreters_per_pool", "int32", 1, "TFLite interpreters per pool."),
        s(
            "enable_signature_method_name_check",
            "bool",
            False,
            "Check SignatureDef method names.",
        ),
        s("xla_cpu_compilation_enabled", "bool", False, "Enable XLA:CPU JIT."),
        s("xla_gpu_compilation_enabled", "bool", False, "Enable XLA:CPU and XLA:GPU JIT."),
        s("enable_profiler", "bool", True, "Enable the profiler service."),
        s("thread_pool_factory_config_file", "string", "", "ThreadPoolConfig text proto."),
        s("mixed_precision", "string", "", "Mixed precision mode."),
        s("skip_initialize_tpu", "bool", False, "Skip TPU initialisation."),
        s("enable_grpc_healthcheck_service", "bool", False, "Serve grpc.health.v1."),
        s(
            "enable_serialization_as_tensor_content",
            "bool",
            False,
            "Serialize Predict outputs as tensor_content.",
        ),
    ]


SPECS: list[FlagSpec] = _specs()
FLAG_NAMES: frozenset[str] = frozenset(spec.name for spec in SPECS)

_INT = re.compile(r"\s*[+-]?\d+")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_integer(text: str, bits: int) -> int | None:
    """sscanf("%d%c") / sscanf("%lld%c"): exactly one integer, nothing after it.

    glibc reads %d through strtol, which clamps at the 64-bit range, and stores the result
    in an int: an out-of-range int32 wraps as that conversion does.
    """
    m = _INT.fullmatch(text)
    if m is None:
        return None
    value = max(_INT64_MIN, min(_INT64_MAX, int(text)))
    if bits == 32:
        value = (value + 2**31) % 2**32 - 2**31
    return value


def _parse_float(text: str) -> float | None:
    stripped = text.lstrip()
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F.]+([pP][+-]?\d+)?", stripped):
            return float.fromhex(stripped)
        if "_" in stripped or stripped != stripped.rstrip():
            return None
        return float(stripped)
    except ValueError:
        return None


def _try_flag(spec: FlagSpec, arg: str) -> tuple[bool, bool, Any]:
    """(found, value_ok, value) for one flag against one argument, as Flag::Parse does."""
    prefix = f"--{spec.name}"
    if not arg.startswith(prefix):
        return False, True, None
    rest = arg[len(prefix) :]
    if spec.kind == "bool":
        if rest == "":
            return True, True, True
        if not rest.startswith("="):
            return False, True, None  # another flag whose name starts like this one
        value = rest[1:]
        if value.lower() == "true" or value == "1":
            return True, True, True
        if value.lower() == "false" or value == "0":
            return True, True, False
        return True, False, None
    if not rest.startswith("="):
        return False, True, None
    value = rest[1:]
    if spec.kind == "string":
        return True, True, value
    if spec.kind in ("int32", "int64"):
        parsed = _parse_integer(value, 32 if spec.kind == "int32" else 64)
        return True, parsed is not None, parsed
    parsed_float = _parse_float(value)
    return True, parsed_float is not None, parsed_float


@dataclass
class ParsedFlags:
    values: dict[str, Any]
    unknown: list[str] = field(default_factory=list)
    ok: bool = True
    errors: list[str] = field(default_factory=list)  # the LOG(ERROR) lines

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def parse(args: list[str]) -> ParsedFlags:
    """Flags::Parse over argv[1:]."""
    values = {spec.name: spec.default for spec in SPECS}
    result = ParsedFlags(values)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            result.unknown.extend(args[index:])
            break
        found = False
        for spec in SPECS:
            found, value_ok, value = _try_flag(spec, arg)
            if not value_ok:
                result.ok = False
                result.errors.append(
                    f"Couldn't interpret value {arg.partition('=')[2]} for flag {spec.name}."
                )
            if found:
                if value_ok:
                    values[spec.name] = value
                break
        if not found:
            result.unknown.append(arg)
        index += 1
    if result.unknown and result.unknown[0] == "--help":
        result.ok = False
    return result


def _display_default(spec: FlagSpec) -> str:
    if spec.kind == "bool":
        return f"--{spec.name}={'true' if spec.default else 'false'}"
    if spec.kind == "string":
        return f'--{spec.name}="{spec.default}"'
    if spec.kind == "float":
        return f"--{spec.name}={spec.default:f}"
    return f"--{spec.name}={spec.default}"


def usage(argv0: str) -> str:
    """Flags::Usage: a header, then one tab-separated line per flag."""
    lines = [f"usage: {argv0}\nFlags:\n"]
    for spec in SPECS:
        lines.append(f"\t{_display_default(spec):<33}\t{spec.kind}\t{spec.help}\n")
    return "".join(lines)
