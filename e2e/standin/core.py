"""ServerCore and the request logic behind both APIs.

Modelled on tensorflow_serving/model_servers/server_core.cc (Create waits for the first
config's models; ReloadConfig's transition rules, validation, version labels and the
"model(s) did not become available" wait for models added later),
model_servers/get_model_status_impl.cc, servables/tensorflow/get_model_metadata_impl.cc,
servables/tensorflow/predict_impl.cc + predict_util.cc and, for the request errors,
tensorflow/cc/saved_model/util.cc GetInputValues.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from e2e.standin import logs, metrics, protos, storage
from e2e.standin.manager import (
    AVAILABLE,
    EventBus,
    Manager,
    ManagerOptions,
    StateMonitor,
    unavailable_message,
)
from e2e.standin.servable import (
    LoadOptions,
    SavedModelLoader,
    Servable,
    tensor_from_proto,
    tensor_to_proto,
)
from e2e.standin.source import FileSystemStoragePathSource, servable_from_model_config
from e2e.standin.status import (
    OK,
    Status,
    StatusError,
    failed_precondition,
    invalid_argument,
    unknown,
)

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class CoreOptions:
    file_system_poll_wait_seconds: int
    manager: ManagerOptions
    allow_version_labels_for_unavailable_models: bool
    load: LoadOptions
    tensor_content_outputs: bool


def _platform(model: Any) -> str:
    """server_core.cc GetPlatform."""
    if model.model_type != 0:
        logs.warning(
            f"{logs.SERVER_CORE}:80",
            "Deprecated ModelServerConfig::model_type field used. Prefer ModelServerConfig::model_platform.",
        )
        if model.model_platform:
            raise StatusError(
                invalid_argument(
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    f"ModelServerConfig::model_platform, model name is {model.name}"
                )
            )
        if model.model_type == 1:
            return TENSORFLOW_PLATFORM
        raise StatusError(invalid_argument(f"ModelServerConfig::model_type choice {model.model_type} not supported."))
    if not model.model_platform:
        raise StatusError(
            invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        )
    return str(model.model_platform)


def validate_model_config_list(config_list: Any) -> None:
    names: set[str] = set()
    for model in config_list.config:
        if model.name in names:
            raise StatusError(invalid_argument(f"Illegal to list model {model.name} multiple times in config list"))
        names.add(model.name)
    for model in config_list.config:
        if storage.is_relative(model.base_path):
            raise StatusError(
                invalid_argument(
                    f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
                )
            )


class ServerCore:
    def __init__(self, options: CoreOptions, registry: metrics.Registry) -> None:
        self.options = options
        self.registry = registry
        self.bus = EventBus()
        self.monitor = StateMonitor(self.bus)
        self.manager = Manager(
            self.bus,
            options.manager,
            lambda name, version, path: SavedModelLoader(name, version, path, options.load),
        )
        self._config_lock = threading.Lock()
        self.config: Any = None
        self._labels: dict[str, dict[str, int]] | None = None
        self._labels_lock = threading.Lock()
        self._source: FileSystemStoragePathSource | None = None

    @classmethod
    def create(cls, options: CoreOptions, config: Any, registry: metrics.Registry) -> ServerCore:
        core = cls(options, registry)
        core.manager.start()
        core.reload_config(config)
        return core

    # ----- configuration ----------------------------------------------------------------

    def reload_config(self, new_config: Any) -> None:
        """ServerCore::ReloadConfig; raises StatusError."""
        with self._config_lock:
            old_case = self.config.WhichOneof("config") if self.config is not None else None
            new_case = new_config.WhichOneof("config")
            is_first = old_case is None
            is_same = self.config is not None and self.config == new_config
            if not (is_first or is_same or (old_case == new_case == "model_config_list")):
                logs.error(
                    f"{logs.SERVER_CORE}:489",
                    "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another.",
                )
                raise StatusError(
                    failed_precondition(
                        "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another."
                    )
                )
            if new_case is None:
                logs.info(f"{logs.SERVER_CORE}:500", "Taking no action for empty config.")
                return
            if new_case == "model_config_list":
                validate_model_config_list(new_config.model_config_list)
            if old_case == new_case == "model_config_list":
                old_platforms = {m.name: _platform(m) for m in self.config.model_config_list.config}
                for m in new_config.model_config_list.config:
                    if m.name in old_platforms and _platform(m) != old_platforms[m.name]:
                        raise StatusError(
                            invalid_argument(
                                f"Illegal to change a model's platform. For model {m.name} platform was "
                                f"{old_platforms[m.name]} and new platform requested is {_platform(m)}"
                            )
                        )
            copy = type(new_config)()
            copy.CopyFrom(new_config)
            self.config = copy
            self._update_label_map()
            logs.info(f"{logs.SERVER_CORE}:516", "Adding/updating models.")
            if new_case == "custom_model_config":
                # server.cc LoadCustomModelConfig: LOG(FATAL), which aborts the process.
                logs._write("F", f"{logs.SERVER}:73", "ModelServer does not yet support custom model config.")
                os.abort()
            self._add_models_via_model_config_list()
            logs.info(f"{logs.SERVER_CORE}:545", "Finished adding/updating models")

    def _update_label_map(self) -> None:
        new_map: dict[str, dict[str, int]] = {}
        for model in self.config.model_config_list.config:
            states = self.monitor.version_states(model.name)
            for label, version in sorted(model.version_labels.items()):
                allow = False
                if self.options.allow_version_labels_for_unavailable_models:
                    existing = self._label_version(model.name, label)
                    allow = not (existing is not None and existing != version)
                state = states.get(version)
                if not allow and (state is None or state.state != AVAILABLE):
                    raise StatusError(
                        failed_precondition(
                            f"Request to assign label to version {version} of model {model.name}, "
                            "which is not currently available for inference"
                        )
                    )
                new_map.setdefault(model.name, {})[label] = version
        with self._labels_lock:
            self._labels = new_map

    def _label_version(self, model: str, label: str) -> int | None:
        with self._labels_lock:
            if self._labels is None:
                return None
            return self._labels.get(model, {}).get(label)

    def _add_models_via_model_config_list(self) -> None:
        models = list(self.config.model_config_list.config)
        servables = []
        for model in models:
            logs.info(f"{logs.SERVER_CORE}:645", f" (Re-)adding model: {model.name}")
            servables.append(servable_from_model_config(model))
        for model in models:
            platform = _platform(model)
            if platform != TENSORFLOW_PLATFORM:
                raise StatusError(invalid_argument(f"Model {model.name} requests unsupported platform {platform}"))
        names = [m.name for m in models]
        if self._source is None:
            self._source = FileSystemStoragePathSource(
                servables, self.options.file_system_poll_wait_seconds, self.manager.set_aspired_versions
            )
            # ConnectSourcesWithFastInitialLoad: more load threads until the first models are in.
            self.manager.set_num_load_threads(self.options.manager.num_initial_load_threads)
            self._source.start()
            all_available, states = self.monitor.wait_until_reached(names, AVAILABLE)
            self.manager.set_num_load_threads(self.options.manager.num_load_threads)
            if not all_available:
                raise StatusError(unknown(unavailable_message("servable(s)", states)))
            return
        fresh = StateMonitor(self.bus)
        try:
            old_names = {s.name for s in self._source_servables()}
            new_models = [n for n in names if n not in old_names]
            self._source.update_config(servables)
            all_available, states = fresh.wait_until_reached(new_models, AVAILABLE)
            if not all_available:
                raise StatusError(unknown(unavailable_message("model(s)", states)))
        finally:
            fresh.close()

    def _source_servables(self) -> list[Any]:
        assert self._source is not None
        return list(self._source._servables)

    # ----- requests ---------------------------------------------------------------------

    def servable_request(self, spec: Any) -> tuple[str, int | None]:
        """ServableRequestFromModelSpec; raises StatusError."""
        if not spec.name:
            raise StatusError(invalid_argument("ModelSpec has no name specified."))
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, spec.version.value
        if choice == "version_label":
            with self._labels_lock:
                if self._labels is None:
                    raise StatusError(Status("UNAVAILABLE", f"Model labels does not init yet.{spec.version_label}"))
                version = self._labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise StatusError(invalid_argument(f"Unrecognized servable version label: {spec.version_label}"))
            return spec.name, version
        return spec.name, None

    def servable_handle(self, spec: Any) -> Servable:
        name, version = self.servable_request(spec)
        status, servable, _ = self.manager.servable_handle(name, version)
        if not status.ok:
            raise StatusError(status)
        return servable  # type: ignore[no-any-return]

    def get_model_status(self, request: Any) -> Any:
        """GetModelStatusImpl::GetModelStatus; raises StatusError."""
        if not request.HasField("model_spec"):
            raise StatusError(invalid_argument("Missing ModelSpec"))
        spec = request.model_spec
        response = protos.GetModelStatusResponse()
        if spec.HasField("version"):
            state = self.monitor.get_state(spec.name, spec.version.value)
            if state is None:
                raise StatusError(Status("NOT_FOUND", f"Could not find version {spec.version.value} of model {spec.name}"))
            states = [state]
        else:
            states = list(self.monitor.version_states(spec.name).values())
            if not states:
                raise StatusError(Status("NOT_FOUND", f"Could not find any versions of model {spec.name}"))
        for s in states:
            mvs = response.model_version_status.add(version=s.version, state=protos.health_protos.STATES[s.state])
            mvs.status.SetInParent()
            mvs.status.error_code = s.health.number
            if not s.health.ok:
                mvs.status.error_message = s.health.message
        return response

    def get_model_metadata(self, request: Any) -> Any:
        """GetModelMetadataImpl::GetModelMetadata; raises StatusError."""
        if not request.HasField("model_spec"):
            raise StatusError(invalid_argument("Missing ModelSpec"))
        if not request.metadata_field:
            raise StatusError(invalid_argument("GetModelMetadataRequest must specify at least one metadata_field"))
        for field_name in request.metadata_field:
            if field_name != "signature_def":
                raise StatusError(invalid_argument(f"Metadata field {field_name} is not supported"))
        servable = self.servable_handle(request.model_spec)
        response = protos.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = protos.SignatureDefMap()
        for key, sig in servable.signatures.items():
            sig_map.signature_def[key].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sig_map)
        return response

    def signature_inputs(self, spec: Any, signature_name: str) -> tuple[Servable, dict[str, Any]]:
        """HttpRestApiHandler::GetInfoMap: the inputs of a signature, for JSON decoding."""
        servable = self.servable_handle(spec)
        name = signature_name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            raise StatusError(invalid_argument(f'Serving signature name: "{name}" not found in signature def'))
        return servable, dict(sig.inputs)

    def predict(self, request: Any, timeout_ms: int) -> Any:
        """TensorflowPredictor::Predict and internal::RunPredict; raises StatusError."""
        if not request.HasField("model_spec"):
            raise StatusError(invalid_argument("Missing ModelSpec"))
        servable = self.servable_handle(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(signature_name)
        if sig is None:
            raise StatusError(failed_precondition(f'Serving signature key "{signature_name}" not found.'))
        response = protos.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = signature_name
        response.model_spec.version.value = servable.version
        request_inputs = set(request.inputs)
        signature_inputs = set(sig.inputs)
        if len(request_inputs) > len(signature_inputs) or (
            len(request_inputs) < len(signature_inputs) and not sig.defaults
        ):
            raise StatusError(
                invalid_argument(
                    f"input size does not match signature: {len(request_inputs)}!={len(signature_inputs)} "
                    f"len({{{','.join(sorted(request_inputs))}}}) != len({{{','.join(sorted(signature_inputs))}}}). "
                    f"Sent extra: {{{','.join(sorted(request_inputs - signature_inputs))}}}. "
                    f"Missing but required: {{{','.join(sorted(signature_inputs - request_inputs))}}}."
                )
            )
        feeds = {}
        for alias in sorted(sig.inputs):
            info = sig.inputs[alias]
            if alias not in request.inputs:
                raise StatusError(
                    invalid_argument(
                        f"Signature input alias: {alias}(feed name: {info.name}) not found in request and no "
                        f"default value provided. Inputs expected to be in the request {{{','.join(sorted(request_inputs))}}}, "
                        f"or default input alias set: {','.join(sorted(sig.defaults))}"
                    )
                )
            tensor = tensor_from_proto(request.inputs[alias])
            if tensor is None:
                raise StatusError(invalid_argument(f"tensor parsing error: {alias}"))
            feeds[info.name] = tensor
        aliases: list[str] = []
        for alias in request.output_filter:
            if alias not in sig.outputs:
                raise StatusError(
                    invalid_argument(
                        f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                        f"{{{','.join(sorted(sig.outputs))}}}."
                    )
                )
            if alias in aliases:
                raise StatusError(invalid_argument(f"duplicate output tensor alias: {alias}"))
            aliases.append(alias)
        if not aliases:
            aliases = sorted(sig.outputs)
        started = time.monotonic()
        status, outputs = servable.session.run(feeds, [sig.outputs[a].name for a in aliases], timeout_ms)
        if not status.ok:
            raise StatusError(status)
        self.registry.observe(
            metrics.RUNTIME_LATENCY, (request.model_spec.name, "Predict", "TF1"), (time.monotonic() - started) * 1e6
        )
        for alias, tensor in zip(aliases, outputs, strict=True):
            response.outputs[alias].CopyFrom(tensor_to_proto(tensor, self.options.tensor_content_outputs))
        return response

    def record_request(self, model_name: str, status: Status) -> None:
        """util.cc RecordModelRequestCount."""
        self.registry.increment(metrics.REQUEST_COUNT, (model_name, status.code))

    def record_latency(self, model_name: str, api: str, entrypoint: str, micros: float) -> None:
        self.registry.observe(metrics.REQUEST_LATENCY, (model_name, api, entrypoint), micros)


__all__ = ["OK", "CoreOptions", "ServerCore"]
