"""`tfleet predict`: one request, or a small steady load, to a served model.

The target is an InferenceService (`NAME`, `tfis/NAME`: its `status.endpoints`), one of its
pods (`pod/NAME`: the pod IP and the serving container's ports), or an address (`--address
HOST:PORT` or a URL: a Service, a port-forward, a TF Serving anywhere). Requests go over REST
(`POST /v1/models/<model>[/versions/<v>|/labels/<l>]:predict`, the default) or gRPC
(`tensorflow.serving.PredictionService/Predict`, with the signature's inputs read once through
`GetModelMetadata`). The body is TF Serving's REST request (`{"instances": [...]}` or
`{"inputs": ...}`); over gRPC it becomes tensors (`tfleet.cli.tensors`) and the answer is
printed as the REST API prints it, so both protocols print the same `predictions` JSON.

With `--rate`, requests go out at that rate for `--duration`, at most `--concurrency` at a
time, and the command prints the count, the latency percentiles and the errors.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tfleet.api.vocabulary import LABEL_ISVC, SERVING_CONTAINER
from tfleet.cli import cluster as clusters
from tfleet.cli import tensors
from tfleet.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from tfleet.cli.flags import (
    add_cluster_flags,
    add_output_flag,
    positive_duration,
    positive_number,
)
from tfleet.cli.output import json_document, yaml_document
from tfleet.durations import format_duration

POD_RESOURCES = ("pod", "pods", "po")
DEFAULT_GRPC_PORT, DEFAULT_REST_PORT = 8500, 8501


@dataclass(frozen=True)
class Endpoint:
    """Where requests go, and what to suggest when it cannot be reached."""

    protocol: str  # "grpc" or "rest"
    address: str  # host:port (gRPC) or the model's REST URL without a version
    model: str
    port_forward: str = ""  # a kubectl port-forward that reaches it from outside the cluster
    local_port: int = 0


class Unreachable(Exception):
    """The server did not answer at all (connection refused, no such host, timed out connecting)."""


class RequestFailed(Exception):
    """The server answered with an error; the message is TF Serving's."""


# ---------------------------------------------------------------------------- targets


def _split_host_port(address: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(address if "//" in address else f"//{address}")
    if not parsed.hostname:
        raise CliError(EXIT_USAGE, f'--address "{address}": expected HOST:PORT or a URL')
    try:
        return parsed.hostname, parsed.port or default_port
    except ValueError:
        raise CliError(EXIT_USAGE, f'--address "{address}": the port is not a number (0-65535)') from None


def _rest_url(host: str, port: int, model: str, scheme: str = "http") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/v1/models/{urllib.parse.quote(model, safe='')}"


def endpoint_from_address(address: str, protocol: str, model: str | None) -> Endpoint:
    if not model:
        raise CliError(EXIT_USAGE, "--model is required with --address (the TF Serving model name)")
    default = DEFAULT_REST_PORT if protocol == "rest" else DEFAULT_GRPC_PORT
    host, port = _split_host_port(address, default)
    if protocol == "grpc":
        shown = f"[{host}]" if ":" in host else host
        return Endpoint("grpc", f"{shown}:{port}", model)
    scheme = urllib.parse.urlsplit(address).scheme if "//" in address else "http"
    return Endpoint("rest", _rest_url(host, port, model, scheme or "http"), model)


def _cluster_host(host: str) -> tuple[str, str] | None:
    """(service, namespace) of a cluster DNS name such as fraud.ml.svc or fraud.ml.svc.cluster.local."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return None


def endpoint_from_status(body: dict[str, Any], protocol: str, model: str | None) -> Endpoint:
    """The endpoint an InferenceService publishes in status.endpoints."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    model = model or (spec.get("model") or {}).get("name") or name
    endpoints = (body.get("status") or {}).get("endpoints") or {}
    published = endpoints.get("grpc") if protocol == "grpc" else endpoints.get("rest")
    if not published:
        raise CliError(EXIT_FAILED, f'inferenceservice "{name}" publishes no {protocol} endpoint yet '
                       "(status.endpoints is empty)", hint="is the operator running? (tfleet rollout status "
                       f"{name} -n {namespace})")
    host, port = _split_host_port(published, DEFAULT_REST_PORT if protocol == "rest" else DEFAULT_GRPC_PORT)
    service = _cluster_host(host)
    forward = f"kubectl port-forward -n {service[1]} svc/{service[0]} {port}:{port}" if service else ""
    address = f"{host}:{port}" if protocol == "grpc" else _rest_url(host, port, model)
    return Endpoint(protocol, address, model, forward, port)


def _container_port(pod: dict[str, Any], names: tuple[str, ...], default: int) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != SERVING_CONTAINER:
            continue
        for p in container.get("ports") or []:
            if p.get("name") in names:
                return int(p["containerPort"])
    return default


def endpoint_from_pod(pod: dict[str, Any], isvc: dict[str, Any] | None, protocol: str,
                      model: str | None) -> Endpoint:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        raise CliError(EXIT_FAILED, f'pod "{meta.get("name")}" has no IP yet (phase {status.get("phase", "Pending")})')
    if not model:
        spec = (isvc or {}).get("spec") or {}
        model = (spec.get("model") or {}).get("name") or (meta.get("labels") or {}).get(LABEL_ISVC) or ""
    port = (_container_port(pod, ("grpc",), DEFAULT_GRPC_PORT) if protocol == "grpc"
            else _container_port(pod, ("http", "rest"), DEFAULT_REST_PORT))
    forward = f"kubectl port-forward -n {meta.get('namespace')} pod/{meta.get('name')} {port}:{port}"
    shown = f"[{ip}]" if ":" in ip else ip
    address = f"{shown}:{port}" if protocol == "grpc" else _rest_url(ip, port, model)
    return Endpoint(protocol, address, model, forward, port)


def resolve_endpoint(args: argparse.Namespace) -> Endpoint:
    if args.address:
        if args.target:
            raise CliError(EXIT_USAGE, "give a TARGET or --address, not both")
        return endpoint_from_address(args.address, args.protocol, args.model)
    if not args.target:
        raise CliError(EXIT_USAGE, "give a TARGET (NAME, tfis/NAME or pod/NAME) or --address HOST:PORT")
    from tfleet.runtime.kube import KubeError

    resource, _, name = args.target.rpartition("/")
    cl = clusters.connect(args)
    try:
        if resource.lower() in POD_RESOURCES:
            pods = [p for p in cl.kube.list_pods(cl.namespace, LABEL_ISVC) if p["metadata"].get("name") == name]
            if not pods:
                raise CliError(EXIT_FAILED, f'pod "{name}" is not a serving pod of any InferenceService in '
                               f'namespace "{cl.namespace}"')
            owner = (pods[0]["metadata"].get("labels") or {}).get(LABEL_ISVC)
            isvc = cl.kube.get_isvc(cl.namespace, owner) if owner and not args.model else None
            return endpoint_from_pod(pods[0], isvc, args.protocol, args.model)
        from tfleet.cli.flags import isvc_reference

        try:
            isvc_name = isvc_reference(args.target)
        except argparse.ArgumentTypeError as exc:
            raise CliError(EXIT_USAGE, f"TARGET {exc} or pod/NAME") from None
        return endpoint_from_status(cl.kube.get_isvc(cl.namespace, isvc_name), args.protocol, args.model)
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None


# ---------------------------------------------------------------------------- the request


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The REST request body from --instances, -f FILE or -f - (stdin)."""
    if args.instances is not None and args.filename is not None:
        raise CliError(EXIT_USAGE, "give --instances or -f, not both")
    if args.instances is None and args.filename is None:
        raise CliError(EXIT_USAGE, "give the input: --instances '[[1.0, 2.0]]' or -f FILE (a request body)")
    if args.instances is not None:
        source, text = "--instances", args.instances
    else:
        source = "-f -" if args.filename == "-" else f"-f {args.filename}"
        try:
            text = sys.stdin.read() if args.filename == "-" else open(args.filename, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"{source}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"{source}: not JSON: {exc}") from None
    if isinstance(doc, list):
        body: dict[str, Any] = {"instances": doc}
    elif isinstance(doc, dict) and ("instances" in doc or "inputs" in doc):
        body = dict(doc)
    else:
        raise CliError(EXIT_USAGE, f'{source}: expected a list of instances or a TF Serving request body '
                       '({"instances": [...]} or {"inputs": ...})')
    if args.instances is not None and not body["instances"]:
        raise CliError(EXIT_USAGE, "--instances: the list is empty")
    if args.signature:
        body["signature_name"] = args.signature
    return body


def _model_spec(message: Any, endpoint: Endpoint, args: argparse.Namespace) -> None:
    message.model_spec.name = endpoint.model
    if args.model_version is not None:
        message.model_spec.version.value = args.model_version
    elif args.label:
        message.model_spec.version_label = args.label


class RestClient:
    def __init__(self, endpoint: Endpoint, args: argparse.Namespace, body: dict[str, Any]):
        url = endpoint.address
        if args.model_version is not None:
            url += f"/versions/{args.model_version}"
        elif args.label:
            url += f"/labels/{urllib.parse.quote(args.label, safe='')}"
        self.url = url + ":predict"
        self.data = json.dumps(body).encode()
        self.timeout = args.timeout

    def predict(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url, data=self.data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(detail).get("error") or detail)
            raise RequestFailed(f"HTTP {exc.code}: {detail.strip()}") from None
        except urllib.error.URLError as exc:
            raise Unreachable(clusters.connection_reason(exc)) from None
        except TimeoutError:
            raise RequestFailed(f"no answer within {format_duration(self.timeout)}") from None
        except OSError as exc:  # a connection reset mid-answer
            raise RequestFailed(f"the connection failed: {clusters.connection_reason(exc)}") from None
        try:
            return dict(json.loads(text))
        except (ValueError, TypeError):
            raise RequestFailed(f"the answer is not a JSON object: {text[:200]}") from None

    def close(self) -> None:
        pass


_UNREACHABLE_DETAILS = ("failed to connect", "dns resolution failed", "name resolution", "connection refused",
                        "no address", "connect failed", "domain name not found", "errors resolving",
                        "lookup error", "could not contact dns")


def grpc_reason(details: str) -> str:
    """A gRPC channel's "failed to connect to all addresses; last error: ..." in a few words."""
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if any(d in lowered for d in ("dns resolution failed", "name resolution", "domain name not found",
                                  "errors resolving", "lookup error", "could not contact dns")):
        return "cannot resolve the host name"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    return details


def format_answer(doc: dict[str, Any]) -> str:
    """TF Serving's answer as JSON, one line per prediction (or per output row)."""
    lines = ["{"]
    items = list(doc.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value:
            rows = [f"        {json.dumps(row)}" for row in value]
            lines.append(f"    {json.dumps(key)}: [\n" + ",\n".join(rows) + f"\n    ]{comma}")
        else:
            lines.append(f"    {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GrpcClient:
    def __init__(self, endpoint: Endpoint, args: argparse.Namespace, body: dict[str, Any]):
        import grpc

        from tfleet.cli import predict_protos as protos

        self._grpc, self._protos = grpc, protos
        self.timeout = args.timeout
        self.channel = grpc.insecure_channel(endpoint.address)
        self._predict = self.channel.unary_unary(
            protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
            response_deserializer=protos.PredictResponse.FromString)
        metadata = self.channel.unary_unary(
            protos.GET_MODEL_METADATA_METHOD, request_serializer=protos.GetModelMetadataRequest.SerializeToString,
            response_deserializer=protos.GetModelMetadataResponse.FromString)
        signature_name = str(body.get("signature_name") or protos.DEFAULT_SIGNATURE)
        request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
        _model_spec(request, endpoint, args)
        response = self._call(metadata, request)
        signatures = protos.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signatures):
            raise RequestFailed("GetModelMetadata returned no signature_def")
        if signature_name not in signatures.signature_def:
            known = ", ".join(sorted(signatures.signature_def)) or "none"
            raise RequestFailed(f'the model has no signature "{signature_name}" (signatures: {known})')
        try:
            self.form, inputs = tensors.request_tensors(
                body, tensors.signature_inputs(signatures.signature_def[signature_name]))
        except tensors.RequestError as exc:
            raise CliError(EXIT_USAGE, f"the request does not fit signature {signature_name}: {exc}") from None
        self.request = protos.PredictRequest()
        _model_spec(self.request, endpoint, args)
        self.request.model_spec.signature_name = signature_name
        for alias, tensor in inputs.items():
            self.request.inputs[alias].CopyFrom(tensor)

    def _call(self, method: Any, request: Any) -> Any:
        grpc = self._grpc
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE and any(d in details.lower() for d in _UNREACHABLE_DETAILS):
                raise Unreachable(grpc_reason(details)) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RequestFailed(f"no answer within {format_duration(self.timeout)}") from None
            raise RequestFailed(f"{code.name}: {details}") from None

    def predict(self) -> dict[str, Any]:
        response = self._call(self._predict, self.request)
        try:
            return tensors.response_json(dict(response.outputs), self.form)
        except ValueError as exc:
            raise RequestFailed(f"cannot show the answer: {exc}") from None

    def close(self) -> None:
        self.channel.close()


def _unreachable(endpoint: Endpoint, reason: str) -> CliError:
    hint = "is the address right, and does TF Serving run there?"
    if endpoint.port_forward:
        hint = (f"cluster addresses answer only inside the cluster; from outside, forward a port:\n"
                f"    {endpoint.port_forward}\n"
                f"  then: tfleet predict --address localhost:{endpoint.local_port} --model {endpoint.model}"
                + (" --protocol grpc" if endpoint.protocol == "grpc" else "") + " ...")
    where = endpoint.address.split("/v1/")[0]
    return CliError(EXIT_UNREACHABLE, f"cannot reach {where}: {reason}", hint=hint)


# ---------------------------------------------------------------------------- load


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LoadResult:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, of the answered requests
    errors: Counter[str] = field(default_factory=Counter)
    unreachable: int = 0  # requests that found no server at all
    elapsed: float = 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def ms(value: float) -> float | None:
            return None if math.isnan(value) else round(value * 1000, 3)

        return {
            "requests": self.sent, "succeeded": len(self.latencies), "failed": sum(self.errors.values()),
            "durationSeconds": round(self.elapsed, 3),
            "ratePerSecond": round(self.sent / self.elapsed, 2) if self.elapsed else 0.0,
            "latencyMilliseconds": {"p50": ms(percentile(ordered, 0.5)), "p90": ms(percentile(ordered, 0.9)),
                                    "p99": ms(percentile(ordered, 0.99)),
                                    "max": ms(ordered[-1]) if ordered else None},
            "errors": dict(self.errors.most_common()),
        }


def run_load(client: Any, rate: float, duration: float, concurrency: int,
             clock: Any = time.monotonic, sleep: Any = time.sleep) -> LoadResult:
    """Requests at `rate` per second for `duration` seconds, at most `concurrency` in flight.
    A request that finds every slot busy waits for one (and is counted late, not dropped)."""
    result = LoadResult()
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(concurrency)

    def one() -> None:
        started = clock()
        try:
            client.predict()
        except Unreachable as exc:
            with lock:
                result.errors[f"unreachable: {exc}"[:200]] += 1
                result.unreachable += 1
        except RequestFailed as exc:
            with lock:
                result.errors[str(exc)[:200]] += 1
        else:
            with lock:
                result.latencies.append(clock() - started)
        finally:
            slots.release()

    total = max(1, int(rate * duration))
    start = clock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for i in range(total):
            due = start + i / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            slots.acquire()
            result.sent += 1
            pool.submit(one)
    result.elapsed = clock() - start
    return result


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latencyMilliseconds"]

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}ms"

    lines = [
        f"requests:  {summary['requests']} in {format_duration(summary['durationSeconds'])} "
        f"({summary['ratePerSecond']:g}/s), {summary['succeeded']} succeeded, {summary['failed']} failed",
        f"latency:   p50 {shown(latency['p50'])}   p90 {shown(latency['p90'])}   p99 {shown(latency['p99'])}   "
        f"max {shown(latency['max'])}",
    ]
    if summary["errors"]:
        lines.append("errors:")
        lines += [f"  {count:>6}x  {message}" for message, count in summary["errors"].items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the command


def cmd_predict(args: argparse.Namespace) -> int:
    if args.duration is not None and args.rate is None:
        raise CliError(EXIT_USAGE, "--duration needs --rate (requests per second)")
    body = request_body(args)
    endpoint = resolve_endpoint(args)
    try:
        client: Any = (GrpcClient if endpoint.protocol == "grpc" else RestClient)(endpoint, args, body)
    except Unreachable as exc:
        raise _unreachable(endpoint, str(exc)) from None
    except RequestFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.rate is None:
            try:
                answer = client.predict()
            except Unreachable as exc:
                raise _unreachable(endpoint, str(exc)) from None
            except RequestFailed as exc:
                print(f"error: TF Serving answered: {exc}", file=sys.stderr)
                return EXIT_FAILED
            sys.stdout.write(yaml_document(answer) if args.output == "yaml" else format_answer(answer))
            return EXIT_OK
        result = run_load(client, args.rate, args.duration or 10.0, args.concurrency)
    finally:
        client.close()
    if result.unreachable == result.sent:
        raise _unreachable(endpoint, next(iter(result.errors)).removeprefix("unreachable: "))
    summary = result.summary()
    if args.output == "json":
        sys.stdout.write(json_document(summary))
    elif args.output == "yaml":
        sys.stdout.write(yaml_document(summary))
    else:
        sys.stdout.write(format_summary(summary))
    return EXIT_FAILED if result.errors else EXIT_OK


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a model version (an integer)') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: a model version is 0 or more")
    return value


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f'"{text}" must be a whole number from 1 to 256')
    return value


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="send a prediction request (or a small load) to a served model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="examples:\n"
        "  tfleet predict fraud -n ml --instances '[[1.0, 2.0]]'\n"
        "  tfleet predict tfis/fraud --protocol grpc -f request.json\n"
        "  tfleet predict pod/fraud-7d9c4f-x2k -n ml --instances '[[1.0]]'\n"
        "  tfleet predict --address localhost:8501 --model fraud --instances '[[1.0]]' --rate 20 --duration 30s\n\n"
        "exit status: 0 every request answered, 1 a request failed, 3 usage, 4 configuration, "
        "5 unreachable, 6 API error")
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="NAME or tfis/NAME (through status.endpoints), or pod/NAME")
    p.add_argument("--address", metavar="ADDRESS",
                   help="send to this address instead: HOST:PORT (a Service, a port-forward) or an http(s) URL")
    p.add_argument("--model", help="TF Serving model name (default: the InferenceService's spec.model.name)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--model-version", type=_version, metavar="N", help="ask this model version")
    choice.add_argument("--label", metavar="LABEL", help="ask the version with this label (stable, canary)")
    p.add_argument("--signature", metavar="NAME", help="signature name (default serving_default)")
    p.add_argument("--protocol", choices=("rest", "grpc"), default="rest", help="REST (default) or gRPC")
    source = p.add_argument_group("input (one of)")
    source.add_argument("--instances", metavar="JSON", help="the instances, a JSON list: '[[1.0, 2.0]]'")
    source.add_argument("-f", "--filename", metavar="FILE",
                        help="a JSON file (- for stdin): a list of instances or a TF Serving REST request body")
    p.add_argument("--timeout", type=positive_duration, default=10.0, metavar="DURATION",
                   help="deadline of each request (default 10s)")
    load = p.add_argument_group("load (prints latency percentiles and errors)")
    load.add_argument("--rate", type=positive_number, metavar="PER_SECOND", help="requests per second")
    load.add_argument("--duration", type=positive_duration, metavar="DURATION",
                      help="how long to send at --rate (default 10s)")
    load.add_argument("--concurrency", type=_concurrency, default=16, metavar="N",
                      help="requests in flight at most (default 16)")
    add_output_flag(p, ("json", "yaml"), None,
                    "the answer (default json) or, with --rate, the summary (default: a text summary)")
    add_cluster_flags(p)
    p.set_defaults(func=cmd_predict)
