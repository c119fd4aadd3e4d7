"""The README's `tfleet` command examples, run, so that they stay true.

Every `tfleet` line of the README's shell blocks must parse. The `render` and `crd` lines run
offline; the `rollout` and `predict` lines run, in the README's order, against the local
control plane and the real operator, with an InferenceService `fraud` whose pods point at a
TF Serving stand-in on 127.0.0.1. What differs from the README is only where things are: the
test's namespace for `ml`, the stand-in's port for `localhost:8501`, the real pod name, a
request file, and a 1-second load instead of 30. The commands run with a resolver on
127.0.0.1, as outside a cluster, so no DNS lookup leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e.standin.models import write_version
from tfleet.cli import exits
from tfleet.cli.main import build_parser

from .standin_support import PYTHONPATH, StandIn

pytestmark = pytest.mark.usefixtures("operator_process")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


SHELL_OPERATORS = {"|", "&", "&&", ";", ">", "||"}


def tfleet_args(words: list[str]) -> list[str] | None:
    """The arguments of the tfleet command in a shell line's words, if it runs one."""
    for i, word in enumerate(words):
        if word == "tfleet" and (i == 0 or words[i - 1] == "|"):
            rest = words[i + 1:]
            end = next((j for j, w in enumerate(rest) if w in SHELL_OPERATORS), len(rest))
            return rest[:end]
    return None


def readme_commands() -> list[str]:
    """The command lines of the README's sh blocks that run tfleet."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if tfleet_args(words) is not None:
                commands.append(line.strip())  # the shell drops the comment itself
    return commands


COMMANDS = readme_commands()

# What each command of the rollout and predict examples answers in the scenario below.
EXPECTED = {
    "rollout status": exits.EXIT_OK,  # the InferenceService is rolled out
    "rollout get": exits.EXIT_OK,
    "rollout pause": exits.EXIT_OK,
    "rollout resume": exits.EXIT_OK,
    "rollout promote": exits.EXIT_FAILED,  # no rollout in progress
    "rollout abort": exits.EXIT_FAILED,
    "rollout history": exits.EXIT_OK,
}


def test_the_readme_has_examples_of_every_command() -> None:
    verbs = {" ".join((tfleet_args(shlex.split(c, comments=True)) or [])[:2]) for c in COMMANDS}
    for verb in ("rollout status", "rollout get", "rollout history", "render -f"):
        assert verb in verbs, verbs
    assert any(" predict " in f" {c} " for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command: str) -> None:
    args = tfleet_args(shlex.split(command, comments=True))
    assert args is not None
    try:
        build_parser().parse_args(args)  # a usage error raises SystemExit(2)
    except SystemExit as exc:
        # --help prints and leaves with 0; anything else is a usage error.
        assert exc.code == 0 and ("--help" in args or "-h" in args), (command, exc.code)


def test_the_offline_examples_run() -> None:
    for command in COMMANDS:
        if (tfleet_args(shlex.split(command, comments=True)) or [""])[0] not in ("render", "crd"):
            continue
        shell = command.replace("tfleet ", f"{shlex.quote(sys.executable)} -m tfleet.cli ")
        result = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": PYTHONPATH})
        assert result.returncode == 0, f"{command}:\n{result.stderr}"
        assert result.stdout


@pytest.mark.simulated  # the pods are pointed at a stand-in this test runs on 127.0.0.1
def test_the_rollout_and_predict_examples_run(kubectl, namespace, kubeconfig, tmp_path):
    base = tmp_path / "models" / "fraud"
    write_version(base, 1, {"function": {"linear": {"a": 0.5, "b": 2}}})
    standin = StandIn(tmp_path / "standin", ["--model_name=fraud", f"--model_base_path={base}"]).wait_serving()
    try:
        isvc = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
                "metadata": {"name": "fraud", "namespace": namespace},
                "spec": {"model": {"basePath": "gs://bucket/models/fraud", "version": 1}, "replicas": 1,
                         "server": {"grpcPort": standin.grpc_port, "restPort": standin.rest_port},
                         "pod": {"annotations": {"localcluster.tfleet.dev/pod-ip": "127.0.0.1"}}}}
        kubectl("apply", "-f", "-", input=yaml.safe_dump(isvc))
        kubectl("wait", "--for=condition=Ready", "tfis/fraud", "-n", namespace, "--timeout=60s")
        pod = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "tfleet.dev/inferenceservice=fraud",
                                 "-o", "json").stdout)["items"][0]["metadata"]["name"]
        (tmp_path / "request.json").write_text(json.dumps({"instances": [[1.0, 2.0]]}))
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        ran = 0
        for command in COMMANDS:
            words = tfleet_args(shlex.split(command, comments=True)) or []
            verb = " ".join(words[:2])
            if not (verb in EXPECTED or verb.startswith("predict")):
                continue
            local = (command.replace("-n ml", f"-n {namespace}")
                     .replace("localhost:8501", f"127.0.0.1:{standin.rest_port}")
                     .replace("pod/fraud-5b1a2e-x7k2p", f"pod/{pod}")
                     .replace("--duration 30s", "--duration 1s")
                     .replace("tfleet ", f"{shlex.quote(sys.executable)} -m tfleet.cli "))
            local = shlex.join(shlex.split(local, comments=True))
            shell = f"mount --bind {resolv} /etc/resolv.conf && exec {local} --kubeconfig {kubeconfig}"
            result = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True,
                                    timeout=90, cwd=tmp_path, env={**os.environ, "PYTHONPATH": PYTHONPATH})
            if verb == "predict fraud":
                # Through status.endpoints: cluster names do not resolve outside the cluster.
                assert result.returncode == exits.EXIT_UNREACHABLE, f"{command}:\n{result.stderr}"
                assert "kubectl port-forward" in result.stderr
            elif verb.startswith("predict"):
                assert result.returncode == exits.EXIT_OK, f"{command}:\n{result.stderr}"
                if "--rate" in words:
                    assert " 0 failed" in result.stdout
                else:
                    assert json.loads(result.stdout) == {"predictions": [[2.5, 3.0]]}
            else:
                assert result.returncode == EXPECTED[verb], f"{command}:\n{result.stdout}{result.stderr}"
            assert "Traceback" not in result.stderr
            ran += 1
        assert ran >= len(EXPECTED) + 3
    finally:
        standin.stop()
