"""`make demo`: the operator's main job, shown on the local control plane.

1. Renders every example offline (what GitOps pipelines do with `tfleet render`).
2. Starts the local control plane and the real operator (`tfleet run`) as processes.
3. Applies the CRD and the examples with kubectl, waits for them to become Ready, and
   shows what kubectl shows: the InferenceServices with their columns, and their children.
4. Bumps a model version (a canary rollout, followed with `tfleet rollout status`) and a
   batching setting (a new revision), scales (not a new revision), and breaks a spec.
5. Serves a model on pods that really run, under a live Predict load: a canary, then the
   rollback of a version that cannot load (`e2e/demo_serving.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from e2e import demo_serving, processes

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
NAMESPACE = "ml"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(*args: str, input: str | None = None, check: bool = True) -> str:
    print(f"$ {' '.join(args)}", flush=True)
    result = subprocess.run(args, input=input, text=True, capture_output=True, cwd=ROOT)
    out = (result.stdout + result.stderr).rstrip()
    if out:
        print(out, flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"command failed with exit status {result.returncode}")
    return result.stdout


def render_summary() -> None:
    banner("Offline: tfleet render examples/*.yaml")
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        out = subprocess.run([sys.executable, "-m", "tfleet.cli", "render", "-f", str(path)],
                             text=True, capture_output=True, check=True).stdout
        kinds = [f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(out) if d]
        print(f"  {path.name:<18} -> {', '.join(kinds)}")


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}")
    raise SystemExit(f"timed out waiting for {needle!r}")


def main() -> int:
    render_summary()
    workdir = Path(tempfile.mkdtemp(prefix="tfleet-demo-"))
    kubeconfig = workdir / "kubeconfig"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    banner("Starting the local control plane")
    cluster = subprocess.Popen([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    operator: subprocess.Popen[str] | None = None
    try:
        wait_for_line(cluster, "ready", 30)
        print(f"  kubeconfig: {kubeconfig}")
        kubectl = [str(KUBECTL), "--kubeconfig", str(kubeconfig)]
        run(*kubectl, "apply", "-f", "crds/inferenceservices.tfleet.dev.yaml")
        run(*kubectl, "wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev")

        banner("Starting the operator: tfleet run --all-namespaces")
        log = open(workdir / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen([sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(kubeconfig)],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"  operator log: {workdir / 'operator.log'}")

        banner("Applying the examples")
        run(*kubectl, "create", "namespace", NAMESPACE)
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            text = path.read_text().replace("pvc://model-store/bert", "/models/bert")
            run(*kubectl, "apply", "-f", "-", input=text)
        run(*kubectl, "wait", "--for=condition=ModelAvailable", "tfis", "--all", "-n", NAMESPACE, "--timeout=60s")
        run(*kubectl, "get", "tfis", "-n", NAMESPACE)
        run(*kubectl, "get", "deployments,services,hpa,pdb,configmaps", "-n", NAMESPACE,
            "-l", "app.kubernetes.io/managed-by=tfleet")
        run(*kubectl, "get", "pods", "-n", NAMESPACE, "-o", "wide")

        banner("GPU pods land on GPU nodes")
        run(*kubectl, "get", "pods", "-n", NAMESPACE, "-l", "tfleet.dev/inferenceservice=resnet-gpu",
            "-o", "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,STATUS:.status.phase")

        banner("A version bump rolls out as a canary, step by step")
        # Short pauses, so the demo does not wait minutes.
        bump = {"spec": {"model": {"version": 13},
                         "rollout": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]}}}
        run(*kubectl, "patch", "tfis", "fraud", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(bump))
        run(sys.executable, "-m", "tfleet.cli", "rollout", "status", "fraud", "-n", NAMESPACE,
            "--kubeconfig", str(kubeconfig), "--timeout", "60")
        run(*kubectl, "get", "tfis", "fraud", "-n", NAMESPACE)
        run(sys.executable, "-m", "tfleet.cli", "rollout", "history", "fraud", "-n", NAMESPACE,
            "--kubeconfig", str(kubeconfig))

        banner("A batching change is a new revision too; a replicas change is not")
        change = {"spec": {"batching": {"maxBatchSize": 64, "allowedBatchSizes": [16, 32, 64]},
                           "rollout": {"steps": [{"weight": 50, "pause": "1s"}]}}}
        run(*kubectl, "patch", "tfis", "bert-batched", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(change))
        run(sys.executable, "-m", "tfleet.cli", "rollout", "status", "bert-batched", "-n", NAMESPACE,
            "--kubeconfig", str(kubeconfig), "--timeout", "60")
        run(*kubectl, "scale", "tfis/bert-batched", "-n", NAMESPACE, "--replicas=4")
        run(*kubectl, "wait", "--for=jsonpath={.status.readyReplicas}=4", "tfis/bert-batched", "-n", NAMESPACE,
            "--timeout=60s")
        run(*kubectl, "get", "deployments", "-n", NAMESPACE, "-l", "tfleet.dev/inferenceservice=bert-batched")

        banner("An invalid change is refused by the API server")
        run(*kubectl, "patch", "tfis", "fraud", "-n", NAMESPACE, "--type=merge",
            "-p", '{"spec":{"model":{"basePath":"ftp://models/fraud"}}}', check=False)

        banner("An invalid change only the operator can see is reported, and the running pods keep serving")
        run(*kubectl, "patch", "tfis", "fraud", "-n", NAMESPACE, "--type=merge",
            "-p", '{"spec":{"pod":{"affinity":{"nodeAfinity":{}}}}}')
        run(*kubectl, "wait", "--for=condition=Degraded", "tfis/fraud", "-n", NAMESPACE, "--timeout=30s")
        run(*kubectl, "get", "tfis", "fraud", "-n", NAMESPACE,
            "-o", "jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{'\\n'}{end}")
        run(*kubectl, "describe", "tfis", "fraud", "-n", NAMESPACE)
    finally:
        for proc in (operator, cluster):
            processes.stop(proc, timeout=10)
    demo_serving.run()
    banner("Done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
