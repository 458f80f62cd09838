"""The servers trainpipe's server is compared with, each wrapping the same ONNX Runtime session.

    python benchmarks/serving_competitors.py fastapi  --model model.onnx --port 0
    python benchmarks/serving_competitors.py kserve   --model model.onnx --port 0
    python benchmarks/serving_competitors.py mlserver --model model.onnx --port 0 --workdir DIR

Each prints ``competitor on http://127.0.0.1:PORT`` and serves OIP v2 ``POST
/v2/models/digits-classifier/infer``. This file runs in the benchmark's own virtualenvs (see
``benchmarks/serving.py``: KServe and MLServer pin packages the project does not), so it imports
neither trainpipe nor torch. The session options are the ones trainpipe's server uses by
default: one intra-op thread, one inter-op thread, sequential execution, no spinning, all graph
optimizations.

- fastapi: the obvious FastAPI + ONNX Runtime app, an async endpoint parsing the JSON itself;
- kserve: KServe's Python ModelServer with a custom ``kserve.Model`` (one worker, no gRPC, no
  access log: no server in the comparison writes a line per request);
- mlserver: MLServer with a custom ``MLModel`` (``parallel_workers: 0``, as MLServer needs for
  a model that is not picklable into worker processes; no gRPC or metrics server in the way).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at runtime.
import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path

MODEL_NAME = "digits-classifier"


def ort_session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def announce(port: int) -> None:
    print(f"competitor on http://127.0.0.1:{port}", flush=True)


def run_fastapi(model_path: str, port: int) -> None:
    import numpy as np
    import uvicorn
    from fastapi import FastAPI, Request

    session = ort_session(model_path)
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict:
        payload = await request.json()
        tensor = payload["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        y = session.run(None, {input_name: x})[0]
        return {
            "model_name": name,
            "id": payload.get("id"),
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": list(y.shape),
                    "data": y.ravel().tolist(),
                }
            ],
        }

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    announce(port)
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def run_kserve(model_path: str, port: int) -> None:
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class OrtModel(kserve.Model):
        def __init__(self) -> None:
            super().__init__(MODEL_NAME)
            self.load()

        def load(self) -> bool:
            self.session = ort_session(model_path)
            self.input_name = self.session.get_inputs()[0].name
            self.ready = True
            return self.ready

        async def predict(
            self, payload: InferRequest, headers=None, response_headers=None
        ) -> InferResponse:
            x = payload.inputs[0].as_numpy()
            y = self.session.run(None, {self.input_name: x})[0]
            output = InferOutput(name="logits", shape=list(y.shape), datatype="FP32")
            output.set_data_from_numpy(y, binary_data=False)
            return InferResponse(
                response_id=payload.id, model_name=self.name, infer_outputs=[output]
            )

    announce(port)
    # KServe's uvicorn writes an access-log line per request; the other servers write none.
    logging.getLogger("uvicorn.access").disabled = True
    kserve.ModelServer(
        http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([OrtModel()])


MLSERVER_MODEL = """
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from serving_competitors import ort_session


class OrtModel(MLModel):
    async def load(self) -> bool:
        self.session = ort_session(self.settings.parameters.uri)
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        y = self.session.run(None, {self.input_name: x})[0]
        return InferenceResponse(
            id=payload.id, model_name=self.name, outputs=[NumpyCodec.encode_output("logits", y)]
        )
"""


def run_mlserver(model_path: str, port: int, workdir: Path) -> None:
    import shutil

    folder = workdir / "mlserver"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(__file__, folder / "serving_competitors.py")
    (folder / "ort_model.py").write_text(MLSERVER_MODEL)
    settings = {
        "parallel_workers": 0,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_endpoint": None,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "ort_model.OrtModel",
        "parameters": {"uri": str(Path(model_path).resolve())},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    announce(port)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    mlserver = str(Path(sys.executable).with_name("mlserver"))  # the venv's console script
    os.execve(mlserver, [mlserver, "start", str(folder)], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server", choices=["fastapi", "kserve", "mlserver"])
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workdir", default=".", help="where mlserver's settings are written")
    args = parser.parse_args()
    port = args.port or free_port()
    if args.server == "fastapi":
        run_fastapi(args.model, port)
    elif args.server == "kserve":
        run_kserve(args.model, port)
    else:
        run_mlserver(args.model, port, Path(args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
