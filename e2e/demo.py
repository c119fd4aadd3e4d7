"""`make demo`: the operator's main job, shown on the local control plane.

1. Renders every example offline (what GitOps pipelines do with `tfleet render`).
2. Starts the local control plane and the real operator (`tfleet run`) as processes.
3. Applies the CRD and the examples with kubectl, waits for them to become Ready, and
   shows what kubectl shows: the InferenceServices with their columns, and their children.
4. Bumps a model version (a canary rollout, followed with `tfleet rollout status`) and a
   batching setting (a new revision), scales (not a new revision), and breaks a spec.
5. Serves a model on pods that really run, under a live Predict load: a canary, then the
   rollback of a version that cannot load (`e2e/demo_serving.py`).

It applies the example files unchanged, so the revisions the cluster runs are the ones
`tfleet render` printed for them (the demo checks). `--keep` (`make demo KEEP=1`) leaves
both local control planes and their operators running, and prints their kubeconfigs and the
command that stops them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import demo_serving, processes
from e2e.render import render, revisions_of

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
NAMESPACE = "ml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# examples/batching.yaml reads its model from the PersistentVolumeClaim model-store
# (pvc://model-store/bert): the claim must exist in the namespace, as it must on any cluster.
MODEL_STORE = {
    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
    "metadata": {"name": "model-store", "namespace": NAMESPACE},
    "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "10Gi"}}},
}


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


def render_summary() -> dict[str, str]:
    """Renders every example, prints what it becomes, and returns the revisions."""
    banner("Offline: tfleet render examples/*.yaml")
    revisions: dict[str, str] = {}
    for path in EXAMPLES:
        objects = render(path)
        kinds = [f"{d['kind']}/{d['metadata']['name']}" for d in objects]
        print(f"  {path.name:<18} -> {', '.join(kinds)}")
        revisions.update(revisions_of(objects))
    return revisions


def apply_examples(kubectl: list[str]) -> None:
    """The example files as they are, after the claim one of them reads its model from."""
    run(*kubectl, "apply", "-f", "-", input=json.dumps(MODEL_STORE))
    for path in EXAMPLES:
        run(*kubectl, "apply", "-f", str(path.relative_to(ROOT)))


def applied_revisions(kubectl: list[str], namespace: str = NAMESPACE) -> dict[str, str]:
    """InferenceService name -> the revision the operator rolled out (status.rollout.stableRevision)."""
    items = json.loads(subprocess.run([*kubectl, "get", "tfis", "-n", namespace, "-o", "json"], text=True,
                                      capture_output=True, check=True).stdout)["items"]
    return {i["metadata"]["name"]: ((i.get("status") or {}).get("rollout") or {}).get("stableRevision", "")
            for i in items}


def check_revisions(rendered: dict[str, str], applied: dict[str, str]) -> None:
    if rendered != applied:
        raise SystemExit(f"the cluster runs other revisions than tfleet render printed: {applied} != {rendered}")
    print(f"  every revision is the one tfleet render printed ({', '.join(f'{k}-{v}' for k, v in sorted(applied.items()))})")


def wait_for_line(proc: subprocess.Popen[str], path: Path, needle: str, timeout: float) -> None:
    """Until the process has written `needle` to the file its stdout goes to."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text():
            return
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}")
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {needle!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description="The tfleet demo (make demo).")
    parser.add_argument("--keep", action="store_true",
                        help="leave the local control planes and operators running at the end (make demo KEEP=1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    keep = parse_args(argv).keep
    rendered = render_summary()
    workdir = Path(tempfile.mkdtemp(prefix="tfleet-demo-"))
    kubeconfig = workdir / "kubeconfig"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    banner("Starting the local control plane")
    # Output to files and, when kept, sessions of their own: nothing ties them to this process.
    cluster = subprocess.Popen([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig)],
                               cwd=ROOT, stdout=open(workdir / "localcluster.out", "w"),  # noqa: SIM115
                               stderr=open(workdir / "localcluster.log", "w"), text=True, env=env,  # noqa: SIM115
                               start_new_session=keep)
    operator: subprocess.Popen[str] | None = None
    kept: list[processes.Kept] = []
    if keep:
        kept.append(processes.Kept("The examples", kubeconfig, f"kubectl get tfis -n {NAMESPACE}", [cluster.pid],
                                   workdir))
    try:
        wait_for_line(cluster, workdir / "localcluster.out", "ready", 30)
        print(f"  kubeconfig: {kubeconfig}")
        kubectl = [str(KUBECTL), "--kubeconfig", str(kubeconfig)]
        run(*kubectl, "apply", "-f", "crds/")
        run(*kubectl, "wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
            "crd/inferenceservicedefaults.tfleet.dev")

        banner("Starting the operator: tfleet run --all-namespaces")
        log = open(workdir / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen([sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(kubeconfig)],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=keep)
        if keep:
            kept[0].pids.insert(0, operator.pid)  # the operator stops first
        print(f"  operator log: {workdir / 'operator.log'}")

        banner("Applying the examples")
        run(*kubectl, "create", "namespace", NAMESPACE)
        apply_examples(kubectl)
        run(*kubectl, "wait", "--for=condition=ModelAvailable", "tfis", "--all", "-n", NAMESPACE, "--timeout=60s")
        check_revisions(rendered, applied_revisions(kubectl))
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
        if not keep:
            for running in (operator, cluster):  # before the second control plane starts
                processes.stop(running, timeout=10)
        demo_serving.run(keep=keep, kept=kept)
    finally:
        if keep:
            # Also after a failure: what runs is left for a look, with how to stop it.
            banner("Left running (KEEP=1)")
            print(processes.describe_kept(kept), flush=True)
        else:
            for proc in (operator, cluster):
                processes.stop(proc, timeout=10)
    banner("Done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
