"""The `tensorflow/serving` image, as the process runtime needs it to run a container.

From tensorflow_serving/tools/docker/Dockerfile (and Dockerfile.gpu for `-gpu` tags):

- ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"], no CMD, no WORKDIR (so "/"), no USER
  (the image runs as root), EXPOSE 8500 (gRPC) and 8501 (REST);
- ENV MODEL_BASE_PATH=/models and MODEL_NAME=model, on top of the base image's PATH
  (ubuntu:22.04; nvidia/cuda's for the GPU image, which adds CUDA's own variables);
- /usr/bin/tf_serving_entrypoint.sh, a bash script that runs
  `tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
  --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"` *without* exec: bash stays PID 1
  of the container, and a PID 1 with no SIGTERM handler never sees the kubelet's SIGTERM.
  The container's args are appended; TF's flag parser keeps the last value of a flag, so
  `--port=9000` in args wins over the script's `--port=8500`.

`image_files` gives the files to bind-mount into the container's mount namespace: that
script, and in place of the C++ binary, /usr/bin/tensorflow_model_server, a shell wrapper
that execs the stand-in (`python -m e2e.standin "$@"`) with the given interpreter and
PYTHONPATH, so the server process is the script's child as in the real image.
"""

from __future__ import annotations

import re
import shlex

from e2e.standin.server import ARGV0_ENV, DEFAULT_VERSION, VERSION_ENV

ENTRYPOINT_PATH = "/usr/bin/tf_serving_entrypoint.sh"
MODEL_SERVER_PATH = "/usr/bin/tensorflow_model_server"
ENTRYPOINT: list[str] = [ENTRYPOINT_PATH]
CMD: list[str] = []
WORKING_DIR = "/"
USER = "root"
EXPOSED_PORTS: list[int] = [8500, 8501]

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV: dict[str, str] = {
    "PATH": BASE_PATH,
    "MODEL_BASE_PATH": "/models",
    "MODEL_NAME": "model",
}
# Dockerfile.gpu's own ENV lines (CUDNN_VERSION, TF_TENSORRT_VERSION, CUDA, LD_LIBRARY_PATH)
# on nvidia/cuda:12.5.1-base-ubuntu22.04, of whose environment only the variables the
# NVIDIA container runtime and the driver paths rely on are given here.
GPU_ENV: dict[str, str] = {
    "PATH": f"/usr/local/nvidia/bin:/usr/local/cuda/bin:{BASE_PATH}",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "CUDNN_VERSION": "9.3.0.75",
    "TF_TENSORRT_VERSION": "8.6.1",
    "CUDA": "12.5",
    "LD_LIBRARY_PATH": "/usr/local/cuda/extras/CUPTI/lib64:/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "MODEL_BASE_PATH": "/models",
    "MODEL_NAME": "model",
}

_IMAGE = re.compile(r"(?:(?:docker\.io|index\.docker\.io)/)?tensorflow/serving(?::(?P<tag>[\w][\w.-]*))?(?:@sha256:[0-9a-f]{64})?")

# The script the Dockerfile writes (`echo '#!/bin/bash \n\n...'`), with its odd first line.
ENTRYPOINT_SCRIPT = (
    "#!/bin/bash \n"
    "\n"
    "tensorflow_model_server --port=8500 --rest_api_port=8501 "
    '--model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"\n'
)


def is_serving_image(image: str) -> bool:
    """Whether `image` names tensorflow/serving (any tag, digest or Docker Hub prefix)."""
    return _IMAGE.fullmatch(image) is not None


def image_tag(image: str) -> str:
    m = _IMAGE.fullmatch(image)
    if m is None:
        raise ValueError(f"not a tensorflow/serving image: {image}")
    return m.group("tag") or "latest"


def image_env(image: str) -> dict[str, str]:
    """The image's environment: the GPU variant for `-gpu` tags."""
    return dict(GPU_ENV if "gpu" in image_tag(image).split("-") else ENV)


def server_version(image: str) -> str:
    """The TF Serving release a tag names ("2.19.0-gpu" -> "2.19.0"); latest -> the default."""
    m = re.match(r"\d+\.\d+\.\d+", image_tag(image))
    return m.group(0) if m else DEFAULT_VERSION


def model_server_wrapper(python: str, pythonpath: str, version: str = DEFAULT_VERSION) -> str:
    return (
        "#!/bin/sh\n"
        "# tensorflow_model_server of the tensorflow/serving image, played by the tfleet stand-in.\n"
        f"export PYTHONPATH={shlex.quote(pythonpath)}\n"
        f"export {VERSION_ENV}={shlex.quote(version)}\n"
        f'export {ARGV0_ENV}="$0"\n'
        f'exec {shlex.quote(python)} -m e2e.standin "$@"\n'
    )


def image_files(
    python: str, pythonpath: str, *, image: str = f"tensorflow/serving:{DEFAULT_VERSION}"
) -> dict[str, tuple[str, int]]:
    """{absolute path in the container: (content, mode)} to bind-mount for `image`."""
    return {
        ENTRYPOINT_PATH: (ENTRYPOINT_SCRIPT, 0o755),
        MODEL_SERVER_PATH: (model_server_wrapper(python, pythonpath, server_version(image)), 0o755),
    }
