"""Log lines in TensorFlow's format, on stderr, where tensorflow_model_server writes them.

TF's LOG(INFO) writes `2024-05-24 10:00:07.041263: I tensorflow_serving/util/retrier.cc:33]
message`. Each call names the source file (and line) of the real statement it stands for,
so a stand-in log reads like a real one.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime

_lock = threading.Lock()


def _write(severity: str, where: str, message: str) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    with _lock:
        sys.stderr.write(f"{stamp}: {severity} {where}] {message}\n")
        sys.stderr.flush()


def info(where: str, message: str) -> None:
    _write("I", where, message)


def warning(where: str, message: str) -> None:
    _write("W", where, message)


def error(where: str, message: str) -> None:
    _write("E", where, message)


# Where the real statements are (tensorflow/serving, 2.19 era); the line numbers are those
# of the real source, for the look of the log only.
MAIN = "tensorflow_serving/model_servers/main.cc"
SERVER = "tensorflow_serving/model_servers/server.cc"
SERVER_CORE = "tensorflow_serving/model_servers/server_core.cc"
MODEL_SERVICE = "tensorflow_serving/model_servers/model_service_impl.cc"
FS_SOURCE = "tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc"
BASIC_MANAGER = "tensorflow_serving/core/basic_manager.cc"
LOADER_HARNESS = "tensorflow_serving/core/loader_harness.cc"
ASPIRED_MANAGER = "tensorflow_serving/core/aspired_versions_manager.cc"
RETRIER = "tensorflow_serving/util/retrier.cc"
BUNDLE_FACTORY = "tensorflow_serving/servables/tensorflow/bundle_factory_util.cc"
SAVED_MODEL_BUNDLE_FACTORY = "tensorflow_serving/servables/tensorflow/saved_model_bundle_factory.cc"
WARMUP = "tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc"
READER = "external/org_tensorflow/tensorflow/cc/saved_model/reader.cc"
LOADER = "external/org_tensorflow/tensorflow/cc/saved_model/loader.cc"
FLAGS = "external/local_xla/xla/tsl/util/command_line_flags.cc"
TEXT_FORMAT = "external/com_google_protobuf/src/google/protobuf/text_format.cc"
STANDIN = "e2e/standin"
