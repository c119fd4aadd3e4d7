"""Which cluster and namespace a command talks to, resolved as kubectl resolves them, and API
failures turned into one line and an exit status.

kubectl's rules (k8s.io/client-go/tools/clientcmd, loader.go and client_config.go):

- `--kubeconfig FILE` is the only file read; a file that does not exist is an error.
- Otherwise every file of `$KUBECONFIG` (split on ":") that exists is read and merged (the
  first file to set a value wins), or `~/.kube/config` when `$KUBECONFIG` is unset.
- With no file at all, a process inside a pod uses the in-cluster service account
  (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT` and the token file); its namespace is
  `$POD_NAMESPACE`, then the service account's namespace file.
- `--context` picks a context; otherwise the kubeconfig's current-context.
- The namespace is `-n/--namespace`, then the context's namespace, then "default".

The requests themselves go through `tfleet.runtime.kube.Kube`, the project's one API client.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfleet.cli.exits import EXIT_API, EXIT_CONFIG, EXIT_UNREACHABLE, CliError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class Target:
    """Where a command's requests go."""

    kubeconfig_files: tuple[str, ...]  # empty: in-cluster
    context: str | None
    namespace: str
    namespace_from: str  # "flag", "context", "service account" or "default", for messages


def kubeconfig_files(flag: str | None, environ: dict[str, str] | None = None,
                     home: str | None = None) -> tuple[str, ...]:
    """The kubeconfig files kubectl would read, in merge order (the first wins)."""
    env = os.environ if environ is None else environ
    if flag:
        if not Path(flag).expanduser().is_file():
            raise CliError(EXIT_CONFIG, f'--kubeconfig: the file "{flag}" does not exist')
        return (str(Path(flag).expanduser()),)
    if "KUBECONFIG" in env:
        paths = [p for p in env["KUBECONFIG"].split(os.pathsep) if p]
        return tuple(p for p in dict.fromkeys(paths) if Path(p).expanduser().is_file())
    default = Path(home).joinpath(".kube", "config") if home else Path(DEFAULT_KUBECONFIG).expanduser()
    return (str(default),) if default.is_file() else ()


def in_cluster(environ: dict[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT")
                and (account_dir / "token").is_file())


def _in_cluster_namespace(environ: dict[str, str], account_dir: Path) -> str | None:
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return (account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None


NO_CONFIGURATION = ("no cluster configuration: no --kubeconfig, no $KUBECONFIG file, no ~/.kube/config, "
                    "and not inside a pod (KUBERNETES_SERVICE_HOST unset)")


def resolve(kubeconfig: str | None, context: str | None, namespace: str | None,
            environ: dict[str, str] | None = None, home: str | None = None,
            account_dir: Path = SERVICE_ACCOUNT_DIR) -> Target:
    """The files, context and namespace a command uses; CliError(EXIT_CONFIG) when there is none."""
    env = dict(os.environ if environ is None else environ)
    files = kubeconfig_files(kubeconfig, env, home)
    if not files:
        if not in_cluster(env, account_dir):
            raise CliError(EXIT_CONFIG, NO_CONFIGURATION,
                           hint="point --kubeconfig or KUBECONFIG at a kubeconfig file")
        if context:
            raise CliError(EXIT_CONFIG, f'--context "{context}": there is no kubeconfig to take it from '
                           "(only the in-cluster service account)")
        if namespace:
            return Target((), None, namespace, "flag")
        found = _in_cluster_namespace(env, account_dir)
        return Target((), None, found or "default", "service account" if found else "default")
    contexts, current = _contexts(files)
    chosen = current
    if context:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            known = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
            raise CliError(EXIT_CONFIG, f'--context: context "{context}" is not in {_describe(files)} '
                           f"(contexts: {known})")
    elif chosen is None:
        raise CliError(EXIT_CONFIG, f"{_describe(files)} sets no current-context; pass --context",
                       hint=f"contexts: {', '.join(sorted(str(c.get('name')) for c in contexts)) or 'none'}")
    if namespace:
        return Target(files, context, namespace, "flag")
    found = ((chosen or {}).get("context") or {}).get("namespace")
    return Target(files, context, str(found or "default"), "context" if found else "default")


def _describe(files: tuple[str, ...]) -> str:
    return files[0] if len(files) == 1 else "the kubeconfig files " + ":".join(files)


def _contexts(files: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from kubernetes.config import ConfigException, list_kube_config_contexts

    try:
        contexts, current = list_kube_config_contexts(config_file=os.pathsep.join(files))
    except ConfigException as exc:
        if "current-context" in str(exc):
            # No current-context: the contexts are still listed, for --context.
            return _contexts_without_current(files), None
        raise CliError(EXIT_CONFIG, f"{_describe(files)}: {exc}") from None
    except Exception as exc:  # a file that is not YAML, unreadable, of the wrong shape
        raise CliError(EXIT_CONFIG, f"{_describe(files)} cannot be read as a kubeconfig: {exc}") from None
    return list(contexts or []), current


def _contexts_without_current(files: tuple[str, ...]) -> list[dict[str, Any]]:
    import yaml

    out: list[dict[str, Any]] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as stream:
                doc = yaml.safe_load(stream) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(EXIT_CONFIG, f"{path} cannot be read as a kubeconfig: {exc}") from None
        if not isinstance(doc, dict):
            raise CliError(EXIT_CONFIG, f"{path} cannot be read as a kubeconfig: not a mapping")
        out.extend(c for c in doc.get("contexts") or [] if isinstance(c, dict))
    return out


def api_client(target: Target) -> Any:
    """A kubernetes ApiClient for the target (not shared with other clients in the process)."""
    from kubernetes import client, config

    try:
        if not target.kubeconfig_files:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=os.pathsep.join(target.kubeconfig_files),
                                             context=target.context, persist_config=False)
    except config.ConfigException as exc:
        raise CliError(EXIT_CONFIG, f"{_describe(target.kubeconfig_files) or 'in-cluster configuration'}: "
                       f"{exc}") from None
    except Exception as exc:  # broken certificate data, an exec plugin that fails
        raise CliError(EXIT_CONFIG, f"cannot use {_describe(target.kubeconfig_files)}: {exc}") from None


@dataclass
class Cluster:
    """The API client, the namespace and the server address a command works with."""

    kube: Any  # tfleet.runtime.kube.Kube
    namespace: str
    host: str
    target: Target


def connect(args: Any) -> Cluster:
    """The cluster of a parsed command line (its --kubeconfig, --context, -n)."""
    from tfleet.runtime.kube import Kube

    target = resolve(getattr(args, "kubeconfig", None), getattr(args, "context", None),
                     getattr(args, "namespace", None))
    client = api_client(target)
    return Cluster(Kube(client), target.namespace, str(client.configuration.host), target)


def connection_reason(exc: BaseException) -> str:
    """What went wrong on the way to a server, in a few words ("connection refused")."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, TimeoutError | socket.timeout):
            return "timed out"
        if type(current).__name__ in ("ConnectTimeoutError", "ReadTimeoutError"):
            return "timed out"
        if type(current).__name__ == "SSLError" or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return f"TLS failed: {current}"
        for nested in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                stack.append(nested)
        if isinstance(current, OSError) and current.strerror and not stack:
            return current.strerror.lower()
    return str(exc)


def api_failure(exc: Any, host: str) -> CliError:
    """A KubeError as kubectl reports it: unreachable (EXIT_UNREACHABLE) or refused (EXIT_API)."""
    if exc.code == 0:
        return CliError(EXIT_UNREACHABLE, f"cannot reach the API server at {host}: {connection_reason(exc)}",
                        hint="is the cluster up, and is this the right kubeconfig and context?")
    reason, message = exc.reason, exc.message.strip()
    if message.startswith("{"):  # a Status object the client passed on as its raw body
        try:
            status = json.loads(message)
        except ValueError:
            status = {}
        if isinstance(status, dict):
            reason, message = status.get("reason") or reason, str(status.get("message") or message)
    reason = reason or {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(exc.code, str(exc.code))
    message = message or f"HTTP {exc.code}"
    hint = ""
    if exc.code == 404 and "could not find the requested resource" in message:
        hint = "is the InferenceService CRD installed? (tfleet crd | kubectl apply -f -)"
    return CliError(EXIT_API, f"Error from server ({reason}): {message}", hint=hint)
