"""The serving framework a user would pick instead of imagefleet: a
BentoML service with adaptive batching, on the same model, decoding and
preprocessing (ort_bench.py, the contract in models/README.md).

`POST /` with a multipart field `myfile` answers the label (as a one-item
JSON list, BentoML's form for a batchable API); `GET /healthz` is
BentoML's own. BentoML decodes each upload into a PIL image and its
dispatcher gathers concurrent requests into batches of up to 16 for one
onnxruntime run. One worker process per CPU, as BentoML advises for CPU
models, each with one onnxruntime thread. The batch window is wide
(60 s, like imagefleet's result timeout): BentoML answers 503 to requests
it expects to miss the window, and big images take long to preprocess.

    python3 -m venv ~/.cache/imagefleet/bento-venv
    ~/.cache/imagefleet/bento-venv/bin/pip install -r benches/ort/requirements-bento.txt
    cd benches/ort && ~/.cache/imagefleet/bento-venv/bin/python -m bentoml serve bento_service:Classifier --port 8091

`cargo bench --bench pipeline -- --compare-bentoml PYTHON` starts it so.
"""

import os
import sys

import bentoml
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_bench import ROOT, preprocess  # noqa: E402


@bentoml.service(workers="cpu_count", traffic={"concurrency": 256, "timeout": 300})
class Classifier:
    def __init__(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per worker process: the processes share the cores.
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(ROOT, "models", "efficientnet-lite0.onnx"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input = self.session.get_inputs()[0].name
        with open(os.path.join(ROOT, "models", "imagenet-labels.txt")) as labels:
            self.labels = [line.strip() for line in labels]

    @bentoml.api(route="/", batchable=True, max_batch_size=16, max_latency_ms=60000)
    def classify(self, myfile: list[Image.Image]) -> list[str]:
        batch = np.concatenate([preprocess(image.convert("RGB")) for image in myfile])
        logits = self.session.run(None, {self.input: batch})[0]
        return [self.labels[i] for i in logits.argmax(axis=1)]
