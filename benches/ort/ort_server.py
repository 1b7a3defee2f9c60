#!/usr/bin/env python3
"""The baseline imagefleet has to beat: one Python process serving uploads
with onnxruntime, no queue, no workers.

It speaks the same HTTP contract as `imagefleet serve` for what the load
generator uses: `POST /` with a multipart field `myfile` answers the top-1
label as text; `GET /healthz` answers "ok". Decoding and preprocessing are
those of ort_bench.py (the model contract in models/README.md).

    python3 -m venv /tmp/ortvenv && /tmp/ortvenv/bin/pip install -r benches/ort/requirements.txt
    /tmp/ortvenv/bin/python benches/ort/ort_server.py --port 8090
    imagefleet load --url http://127.0.0.1:8090/ tests/samples/*.jpg tests/samples/*.png

`cargo bench --bench pipeline -- --compare-ort-server /tmp/ortvenv/bin/python`
starts it and loads it exactly like `imagefleet serve`.
"""

import argparse
import email.parser
import email.policy
import http.server
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_bench import ROOT, decode, preprocess  # noqa: E402


def read_upload(content_type, body):
    """The bytes of the multipart field `myfile`, or None."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "myfile":
            return part.get_payload(decode=True)
    return None


class Server(http.server.ThreadingHTTPServer):
    # socketserver's default backlog of 5 refuses connections when 100
    # clients connect at once; a real deployment would not.
    request_queue_size = 256
    daemon_threads = True


def make_handler(session, input_name, labels):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, text):
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                self.answer(200, "ok")
            else:
                self.answer(404, "not found")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            data = read_upload(self.headers.get("Content-Type", ""), body)
            if not data:
                self.answer(400, "expected a multipart field 'myfile'")
                return
            try:
                tensor = preprocess(decode(data))
            except Exception as error:  # PIL raises many kinds
                self.answer(422, f"cannot decode image: {error}")
                return
            logits = session.run(None, {input_name: tensor})[0][0]
            self.answer(200, labels[int(np.argmax(logits))])

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "efficientnet-lite0.onnx"))
    parser.add_argument("--labels", default=os.path.join(ROOT, "models", "imagenet-labels.txt"))
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads (0: its default, one per core)",
    )
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    with open(args.labels) as f:
        labels = [line.strip() for line in f]
    server = Server(("127.0.0.1", args.port), make_handler(session, input_name, labels))
    print(f"onnxruntime {ort.__version__} server on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
