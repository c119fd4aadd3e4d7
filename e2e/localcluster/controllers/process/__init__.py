"""The process runtime: pods of process nodes run as real processes.

A node labelled ``localcluster.tfleet.dev/runtime: process`` gets its pods run for real:
a network namespace per pod, each container a process in its own PID, mount and UTS
namespaces with its image's files and its volumes bind-mounted at their paths, real
probes, restarts with the kubelet's back-off, preStop hooks, SIGTERM/SIGKILL at the grace
period, and logs for ``kubectl logs``. See docs/local-cluster-behaviours.md, "Process
runtime".
"""

from .runtime import (
    PROCESS,
    RUNTIME_LABEL,
    SIMULATED,
    ProcessRuntime,
    ProcessRuntimeUnavailable,
    check_host,
    is_process_node,
    remove_dead_runs,
)

__all__ = [
    "PROCESS",
    "RUNTIME_LABEL",
    "SIMULATED",
    "ProcessRuntime",
    "ProcessRuntimeUnavailable",
    "check_host",
    "is_process_node",
    "remove_dead_runs",
]
