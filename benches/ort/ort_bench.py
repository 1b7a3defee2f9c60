#!/usr/bin/env python3
"""onnxruntime on the same model, images and preprocessing as worker-bench.

Prints the median, p90 and mean milliseconds per image for decode, preprocess and
inference on one thread, plus session start-up and resident memory, so the
tract worker can be compared side by side in the same run:

    python3 -m venv /tmp/ortvenv && /tmp/ortvenv/bin/pip install -r benches/ort/requirements.txt
    cargo run -p imagefleet-worker --bin worker-bench -- --compare-ort /tmp/ortvenv/bin/python

With --json the figures are printed as one JSON object (what `worker-bench
--compare-ort` reads).
"""

import argparse
import glob
import io
import json
import os
import resource
import statistics
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def decode(data):
    image = Image.open(io.BytesIO(data))
    return image.convert("RGB")


def preprocess(image, shorter=256, size=224):
    """The contract in models/README: shorter side 256 (bilinear, longer side
    truncated), center crop 224, (v - 127) / 128, NCHW float32."""
    width, height = image.size
    if width <= height:
        new_size = (shorter, height * shorter // width)
    else:
        new_size = (width * shorter // height, shorter)
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR)
    left = (new_size[0] - size) // 2
    top = (new_size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))[np.newaxis]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values):
    return {
        "median_ms": statistics.median(values),
        "p90_ms": percentile(values, 0.9),
        "mean_ms": statistics.fmean(values),
    }


def rss_mb():
    """(VmHWM, VmRSS) in MB from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024.0
    return fields.get("VmHWM", 0.0), fields.get("VmRSS", 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "efficientnet-lite0.onnx"))
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = args.files or sorted(
        f for f in glob.glob(os.path.join(ROOT, "tests", "samples", "*"))
        if not f.endswith((".csv", ".md"))
    )

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    session.run(None, {input_name: np.zeros((1, 3, 224, 224), np.float32)})
    startup_ms = (time.perf_counter() - STARTED) * 1000.0

    blobs = [open(f, "rb").read() for f in files]
    stages = {"decode": [], "preprocess": [], "inference": []}
    top1 = {}
    for _ in range(args.iterations):
        for path, data in zip(files, blobs):
            t0 = time.perf_counter()
            image = decode(data)
            t1 = time.perf_counter()
            tensor = preprocess(image)
            t2 = time.perf_counter()
            logits = session.run(None, {input_name: tensor})[0][0]
            t3 = time.perf_counter()
            stages["decode"].append((t1 - t0) * 1000.0)
            stages["preprocess"].append((t2 - t1) * 1000.0)
            stages["inference"].append((t3 - t2) * 1000.0)
            top1[os.path.basename(path)] = int(np.argmax(logits))
    hwm, rss = rss_mb()
    totals = [sum(v) for v in zip(*stages.values())]
    result = {
        "runtime": f"onnxruntime {ort.__version__}",
        "threads": args.threads,
        "images": len(files),
        "iterations": args.iterations,
        "stages": {name: summary(values) for name, values in stages.items()},
        "total": summary(totals),
        "startup_ms": startup_ms,
        "vm_hwm_mb": hwm,
        "vm_rss_mb": rss,
        "top1": top1,
    }
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return
    print(f"{result['runtime']}, {args.threads} thread(s), {len(files)} images x {args.iterations}")
    for name in ("decode", "preprocess", "inference"):
        s = result["stages"][name]
        print(f"  {name:<11} median {s['median_ms']:8.2f} ms   p90 {s['p90_ms']:8.2f} ms   mean {s['mean_ms']:8.2f} ms")
    t = result["total"]
    print(f"  {'total':<11} median {t['median_ms']:8.2f} ms   p90 {t['p90_ms']:8.2f} ms   mean {t['mean_ms']:8.2f} ms")
    print(f"  start-up (interpreter + session + first run) {startup_ms:.0f} ms")
    print(f"  memory VmHWM {hwm:.1f} MB, VmRSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
