"""tensorflow_model_server's main() and Server::BuildAndStart.

Modelled on tensorflow_serving/model_servers/main.cc and server.cc:

- flags are parsed first (see flags.py); `--version` prints and exits 0;
- BuildAndStart checks the ports and the model source, reads the model config (a
  `--model_config_file` wins over `--model_name`/`--model_base_path`, which are then
  ignored), the batching parameters, then creates the ServerCore, which returns only once
  the first config's models are loaded or have failed: no port is open before that;
- then the gRPC server starts on 0.0.0.0:<port> (and/or unix:<grpc_socket_path>) with the
  `--grpc_channel_arguments` (values that parse as int32 are passed as ints), then the
  monitoring config is read and the HTTP server started;
- any error is printed on stdout as "Failed to start server. Error: <status>" and main
  returns -1: the process exits with status 255;
- there is no signal handler: SIGTERM (and SIGINT) end the process at once.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from tensorflow_serving.config import model_server_config_pb2

from e2e.standin import configs, flags, logs, metrics, storage
from e2e.standin.core import TENSORFLOW_PLATFORM, CoreOptions, ServerCore
from e2e.standin.grpc_services import handlers
from e2e.standin.manager import ManagerOptions
from e2e.standin.rest import DEFAULT_PROMETHEUS_PATH, HttpServer, RestApi
from e2e.standin.servable import BatchScheduler, LoadOptions
from e2e.standin.status import OK, Status, StatusError, invalid_argument

VERSION_ENV = "TFSERVING_STANDIN_VERSION"
ARGV0_ENV = "TFSERVING_STANDIN_ARGV0"
DEFAULT_VERSION = "2.19.0"
_SIMPLE_ATOI32 = re.compile(r"\s*[+-]?\d+\s*")


def single_model_config(name: str, base_path: str) -> Any:
    """server.cc BuildSingleModelConfig."""
    logs.info(
        f"{logs.SERVER}:120",
        f"Building single TensorFlow model file config:  model_name: {name} model_base_path: {base_path}",
    )
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """server.cc parseGrpcChannelArgs: "k=v,k=v"; int32 values are passed as ints."""
    out: list[tuple[str, int | str]] = []
    for item in text.split(","):
        if not item:
            continue  # (an empty list; the real parser indexes past a missing "=")
        key, _, value = item.partition("=")
        if _SIMPLE_ATOI32.fullmatch(value) and -(2**31) <= int(value) < 2**31:
            out.append((key, int(value)))
        else:
            out.append((key, value))
    return out


class Server:
    def __init__(self) -> None:
        self.core: ServerCore | None = None
        self.grpc_server: grpc.Server | None = None
        self.http_server: HttpServer | None = None
        self.registry = metrics.default_registry()
        self._poll_stop = threading.Event()

    def build_and_start(self, o: flags.ParsedFlags) -> Status:
        try:
            self._build_and_start(o)
        except StatusError as e:
            return e.status
        return OK

    def _build_and_start(self, o: flags.ParsedFlags) -> None:
        if o.port == 0 and not o.grpc_socket_path:
            raise StatusError(
                invalid_argument(
                    "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
                )
            )
        if o.use_alts_credentials and o.ssl_config_file:
            raise StatusError(
                invalid_argument("Either use_alts_credentials must be false or ssl_config_file must be empty.")
            )
        if not o.model_base_path and not o.model_config_file:
            raise StatusError(
                invalid_argument(
                    "Both server_options.model_base_path and server_options.model_config_file are empty!"
                )
            )
        if o.model_config_file:
            config = configs.read_model_server_config(o.model_config_file)
        else:
            config = single_model_config(o.model_name, o.model_base_path)

        cpus = flags.schedulable_cpus()
        batching: configs.Batching | None = None
        if not o.platform_config_file:
            if o.enable_batching:
                params = configs.batching_parameters_class()()
                if o.batching_parameters_file:
                    configs.parse_text_proto(o.batching_parameters_file, params)
                else:
                    params.thread_pool_name.value = "model_server_batch_threads"
                batching = configs.batching_from_parameters(params, cpus)
            elif o.batching_parameters_file:
                raise StatusError(
                    invalid_argument(
                        "server_options.batching_parameters_file is set without setting "
                        "server_options.enable_batching to true."
                    )
                )
            if o.tensorflow_session_config_file:
                storage.read_file(o.tensorflow_session_config_file)
                logs.warning(
                    logs.STANDIN,
                    f"The session ConfigProto in {o.tensorflow_session_config_file} is read but not interpreted",
                )
            if (
                o.tensorflow_intra_op_parallelism > 0
                and o.tensorflow_inter_op_parallelism > 0
                and o.tensorflow_session_parallelism > 0
            ):
                raise StatusError(
                    invalid_argument(
                        "Either configure server_options.tensorflow_session_parallelism or "
                        "(server_options.tensorflow_intra_op_parallelism, "
                        "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
                    )
                )
        else:
            configs.read_platform_config(o.platform_config_file)
        if o.use_alts_credentials or o.ssl_config_file:
            raise StatusError(
                Status("UNIMPLEMENTED", "The TF Serving stand-in serves insecure gRPC only (no ALTS, no SSL)")
            )

        scheduler = BatchScheduler(batching, self.registry) if batching is not None else None
        options = CoreOptions(
            file_system_poll_wait_seconds=o.file_system_poll_wait_seconds,
            manager=ManagerOptions(
                max_num_load_retries=o.max_num_load_retries,
                load_retry_interval_micros=o.load_retry_interval_micros,
                num_load_threads=o.num_load_threads,
                num_unload_threads=o.num_unload_threads,
                num_initial_load_threads=4 * cpus,
            ),
            allow_version_labels_for_unavailable_models=o.allow_version_labels_for_unavailable_models,
            load=LoadOptions(
                saved_model_tags=tuple(o.saved_model_tags.split(",")),
                enable_model_warmup=o.enable_model_warmup,
                batching=batching,
                registry=self.registry,
                scheduler=scheduler,
            ),
            tensor_content_outputs=o.enable_serialization_as_tensor_content,
        )
        self.core = ServerCore.create(options, config, self.registry)

        if o.model_config_file_poll_wait_seconds > 0 and o.model_config_file:
            threading.Thread(
                target=self._poll_config,
                args=(o.model_config_file, o.model_config_file_poll_wait_seconds),
                name="Server_fs_model_config_poll_thread",
                daemon=True,
            ).start()

        address = f"0.0.0.0:{o.port}"
        server_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.max_receive_message_length", 2**31 - 1),
            *grpc_channel_arguments(o.grpc_channel_arguments),
        ]
        server = grpc.server(
            ThreadPoolExecutor(max_workers=max(o.grpc_max_threads, 1), thread_name_prefix="grpc"),
            handlers=handlers(self.core),
            options=server_options,
        )
        try:
            if o.port != 0:
                server.add_insecure_port(address)
            if o.grpc_socket_path:
                server.add_insecure_port(f"unix:{o.grpc_socket_path}")
        except RuntimeError:
            raise StatusError(invalid_argument("Failed to BuildAndStart gRPC server")) from None
        if o.enable_grpc_healthcheck_service:
            from grpc_health.v1 import health, health_pb2, health_pb2_grpc

            servicer = health.HealthServicer()
            for service in ("", "ModelService", "PredictionService"):
                servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.start()
        self.grpc_server = server
        if o.port != 0:
            logs.info(f"{logs.SERVER}:430", f"Running gRPC ModelServer at {address} ...")
        if o.grpc_socket_path:
            logs.info(f"{logs.SERVER}:433", f"Running gRPC ModelServer at UNIX socket {o.grpc_socket_path} ...")

        if o.rest_api_port != 0:
            http_address = f"localhost:{o.rest_api_port}"
            if o.rest_api_port == o.port:
                logs.error(
                    f"{logs.SERVER}:456",
                    "server_options.http_port cannot be same as grpc_port. Please use a different port for "
                    "HTTP/REST API. Skipped exporting HTTP/REST API.",
                )
                return
            monitoring = configs.monitoring_config_class()()
            if o.monitoring_config_file:
                configs.parse_text_proto(o.monitoring_config_file, monitoring)
            prometheus = monitoring.prometheus_config
            path = (prometheus.path or DEFAULT_PROMETHEUS_PATH) if prometheus.enable else None
            try:
                self.http_server = HttpServer(
                    o.rest_api_port,
                    o.rest_api_num_threads,
                    RestApi(self.core, o.rest_api_timeout_in_ms),
                    path,
                    self.registry.prometheus_page,
                    o.rest_api_enable_cors_support,
                )
            except OSError:
                logs.error(f"{logs.SERVER}:453", f"Failed to start HTTP Server at {http_address}")
                return
            self.http_server.start()
            logs.info(f"{logs.SERVER}:451", f"Exporting HTTP/REST API at:{http_address} ...")

    def _poll_config(self, path: str, seconds: int) -> None:
        """Server::PollFilesystemAndReloadConfig, run at once and then every `seconds`."""
        assert self.core is not None
        while not self._poll_stop.is_set():
            try:
                config = configs.read_model_server_config(path)
            except StatusError as e:
                logs.error(f"{logs.SERVER}:170", f"Failed to read ModelServerConfig file: {e.status.message}")
            else:
                try:
                    self.core.reload_config(config)
                except StatusError as e:
                    logs.error(
                        f"{logs.SERVER}:177",
                        f"PollFilesystemAndReloadConfig failed to ReloadConfig: {e.status.message}",
                    )
            self._poll_stop.wait(seconds)

    def wait_for_termination(self) -> None:
        threading.Event().wait()


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    # Load threads may still run; the C++ server's exit does not wait for them either.
    os._exit(code)


def main(argv: list[str]) -> None:
    # The real server installs no handler: SIGINT, like SIGTERM, ends it at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    argv0 = os.environ.get(ARGV0_ENV, "tensorflow_model_server")
    parsed = flags.parse(argv[1:])
    for message in parsed.errors:
        logs.error(f"{logs.FLAGS}:52", message)
    usage = flags.usage(argv0)
    if not parsed.ok:
        sys.stdout.write(usage)
        _exit(255)
    if parsed.version:
        version = os.environ.get(VERSION_ENV, DEFAULT_VERSION)
        sys.stdout.write(f"TensorFlow ModelServer: {version}+dev.sha.standin\nTensorFlow Library: {version}\n")
        _exit(0)
    if parsed.unknown:
        sys.stdout.write(f"unknown argument: {parsed.unknown[0]}\n{usage}")
        sys.stdout.flush()
    server = Server()
    status = server.build_and_start(parsed)
    if not status.ok:
        sys.stdout.write(f"Failed to start server. Error: {status}\n")
        _exit(255)
    sys.stdout.flush()
    server.wait_for_termination()
