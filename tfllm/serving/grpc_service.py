"""TF Serving's gRPC `PredictionService` and `ModelService` on grpcio.

Every refusal is a gRPC status with one clear message (INVALID_ARGUMENT, FAILED_PRECONDITION,
NOT_FOUND, RESOURCE_EXHAUSTED, UNAUTHENTICATED); the server itself never fails.
"""

from __future__ import annotations

import logging
from concurrent import futures

from tfllm.errors import UserInputError
from tfllm.serving import tensors as tensors_lib
from tfllm.serving.codec import proto_inputs_to_tensors
from tfllm.serving.connections import ConnectionLimits
from tfllm.serving.limits import Limits, RequestError, bad_version, shown
from tfllm.serving.registry import ModelRegistry
from tfllm.serving.servable import Servable
from tfllm.serving.security import AccessPolicy

logger = logging.getLogger("tfllm.serving")


def _token_interceptor(policy: AccessPolicy):
    import grpc

    class TokenCheck(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            metadata = dict(details.invocation_metadata or ())
            refusal = policy.refusal(None, metadata.get("authorization"))
            if refusal is None:
                return continuation(details)

            def refuse(request, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal[1])

            return grpc.unary_unary_rpc_method_handler(refuse)

    return TokenCheck()


def make_grpc_server(registry: ModelRegistry, address: str, limits: Limits | None = None,
                     policy: AccessPolicy | None = None, workers: int = 16,
                     max_concurrent_rpcs: int | None = None):
    """A bound, not yet started, `grpc.Server` with TF Serving's two services.

    At most `max_concurrent_rpcs` calls (default `ConnectionLimits().max_concurrent_rpcs`:
    `tfllm serve --max-concurrent-rpcs`, else `--max-connections`) are in flight, on the
    `workers` threads or queued for one; grpcio refuses one more at once, before it is
    queued, with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!". Without the cap a
    burst of calls queued without bound, each waiting its turn however long.

    Raises:
        UserInputError: if the address cannot be bound (a busy port).
    """
    import grpc
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    limits = limits or Limits()
    codes = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
             401: grpc.StatusCode.UNAUTHENTICATED, 500: grpc.StatusCode.INTERNAL}

    def spec_version(spec) -> int | None:
        version = spec.version.value if spec.HasField("version") else None
        if version is not None and version < 0:
            raise bad_version(version)
        return version

    def resolve(spec) -> Servable:
        version = spec_version(spec)
        label = spec.version_label or None
        return registry.resolve(spec.name, version, label)

    def guarded(method):
        # Every refusal becomes a gRPC status; the server itself never fails.
        def wrapper(self, request, context):
            try:
                # As TF Serving's: a request without a model spec was looked up as model ''.
                if "model_spec" in request.DESCRIPTOR.fields_by_name and not request.HasField("model_spec"):
                    if method.__name__ in ("Classify", "Regress"):  # REST's :classify says to use Predict
                        raise RequestError(
                            f"{method.__name__} is not supported: tfllm serve runs signatures through "
                            "Predict only, and the request names no model (Missing ModelSpec); use "
                            "Predict (REST :predict).")
                    raise RequestError("Missing ModelSpec")
                return method(self, request, context)
            except RequestError as e:
                code = (getattr(grpc.StatusCode, e.grpc_code) if e.grpc_code
                        else codes.get(e.status, grpc.StatusCode.INVALID_ARGUMENT))
                context.abort(code, e.message)
            except Exception as e:  # noqa: BLE001 - a fault of ours: one log line, INTERNAL
                logger.error("gRPC %s failed: %s: %s", method.__name__, type(e).__name__,
                             str(e).splitlines()[0][:300] if str(e) else "")
                context.abort(grpc.StatusCode.INTERNAL,
                              f"Internal error ({type(e).__name__}); the server log has the details.")
        return wrapper

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):
            servable = resolve(request.model_spec)
            sig = servable.signature(request.model_spec.signature_name or None)
            outputs = sig.call(proto_inputs_to_tensors(request.inputs, sig, limits))
            if request.output_filter:
                unknown = set(request.output_filter) - set(outputs)
                if unknown:
                    raise RequestError(f"Unknown output(s) in output_filter: "
                                       f"[{', '.join(map(shown, sorted(unknown)[:10]))}].")
                outputs = {k: outputs[k] for k in request.output_filter}
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(tensors_lib.to_tensor_proto(v))
            return response

        @guarded
        def GetModelMetadata(self, request, context):
            fields = set(request.metadata_field)
            if fields != {"signature_def"}:
                raise RequestError('metadata_field must be ["signature_def"].')
            servable = resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map)
            return response

        # grpcio's default for these is UNIMPLEMENTED "Method not implemented!"; REST's
        # :classify / :regress get the same message as these.
        @guarded
        def Classify(self, request, context):
            raise resolve(request.model_spec).refuse_method(
                "Classify", request.model_spec.signature_name or None)

        @guarded
        def Regress(self, request, context):
            raise resolve(request.model_spec).refuse_method(
                "Regress", request.model_spec.signature_name or None)

        @guarded
        def MultiInference(self, request, context):
            if not request.tasks:
                raise RequestError("MultiInference needs at least one task; use Predict.")
            spec = request.tasks[0].model_spec
            raise resolve(spec).refuse_method("MultiInference", spec.signature_name or None)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guarded
        def GetModelStatus(self, request, context):
            spec = request.model_spec
            version = spec_version(spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for s in registry.statuses(spec.name, version):
                status = response.model_version_status.add()
                status.version = s.version
                if s.error is None:
                    status.state = getattr(get_model_status_pb2.ModelVersionStatus, s.state)
                    status.status.SetInParent()  # error_code OK, as TF Serving sends
                else:
                    status.state = get_model_status_pb2.ModelVersionStatus.END
                    status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                    status.status.error_message = s.error
            return response

        @guarded
        def HandleReloadConfigRequest(self, request, context):
            # As TF Serving's: the models, policies and labels of the new config, applied as a
            # change of --model-config-file would be (that file's next change wins again).
            config = request.config
            which = config.WhichOneof("config")
            if which != "model_config_list":  # also an empty config, as TF Serving's ModelService
                raise RequestError(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest: send a "
                    f"model_config_list (the config holds {which or 'nothing'}); nothing changed.")
            try:
                refused = registry.apply_config(config)
            except UserInputError as e:
                raise RequestError(str(e)) from e
            if refused:
                raise RequestError("The config is loaded, but " + "; ".join(refused.values())
                                   + "; those labels are refused until their versions load.",
                                   grpc_code="FAILED_PRECONDITION")
            response = model_management_pb2.ReloadConfigResponse()
            response.status.SetInParent()  # error_code OK, as TF Serving sends
            return response

    options = [("grpc.max_receive_message_length", limits.max_body_bytes),
               ("grpc.max_send_message_length", limits.max_body_bytes),
               ("grpc.so_reuseport", 0)]
    interceptors = [_token_interceptor(policy)] if policy is not None and policy.token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options,
                         interceptors=interceptors,
                         maximum_concurrent_rpcs=max_concurrent_rpcs
                         or ConnectionLimits().max_concurrent_rpcs)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise UserInputError(f"Cannot bind gRPC to {address} (is the port in use?); pick "
                             "another --grpc-port, or 0 to turn gRPC off.")
    return server
