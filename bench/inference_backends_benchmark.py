"""One model call per photo (batch 1, one thread) of a bundle: ONNX Runtime, eager torch, and torch traced and
frozen (the TorchScript path the project used before ONNX Runtime), interleaved so machine noise hits all three.

    .venv/bin/python bench/inference_backends_benchmark.py BUNDLE_DIR [--runs 80]

The bundle needs its ONNX export (registering it makes one; or ``ml.export.ensure_onnx_export``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ml.bundle import load_bundle  # noqa: E402
from ml.predict import OnnxRuntimeModel, TorchModel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--runs", type=int, default=80)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    eager = TorchModel(bundle, "cpu", num_threads=1)
    onnx = OnnxRuntimeModel(args.bundle / "model.onnx", num_threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, *bundle.preprocess.input_size), dtype=np.float32)
    example = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(eager.model, example, check_trace=False).eval())

    def run_traced() -> None:
        with torch.inference_mode():
            traced(example)

    calls = {"onnxruntime": lambda: onnx(x), "torch eager": lambda: eager(x), "torch traced+frozen": run_traced}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(5):
            call()
    for _ in range(args.runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    print(
        f"{bundle.kind} {bundle.version} ({bundle.arch}, input {bundle.preprocess.input_size}), batch 1, "
        f"1 thread, {args.runs} interleaved runs each:"
    )
    for name, values in times.items():
        print(f"  {name:20s} median {statistics.median(values):6.1f} ms  p10 {np.percentile(values, 10):6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
