"""INT8 post-training quantization of an ONNX by a peer tool, run in the peers' own venv
(``make peers-venv``: NVIDIA ModelOpt, NNCF, ONNX Runtime; never in resdeploy's ``.venv``).

    .venv-peers/bin/python benchmarks/_peer_quantize.py TOOL SETTING IN.onnx CALIB.npz OUT.onnx

TOOL SETTING is one of:
  modelopt max | entropy | max-fp32   ModelOpt ONNX PTQ (modelopt.onnx.quantization.quantize), int8, on
                                     the CPU (calibration_eps=["cpu"]); its default high_precision_dtype
                                     is fp16 (max-fp32 keeps the remainder FP32, to tell the two apart)
  nncf performance | mixed           nncf.quantize on the ONNX model (symmetric / asymmetric activations)
  ort defaults | best                onnxruntime.quantization.quantize_static: its defaults, or QDQ with
                                     per-channel weights and percentile calibration
CALIB.npz holds ``x`` (N,3,H,W float32, preprocessed) with N a multiple of 32. Prints one JSON
line: the seconds the quantization call took (imports excluded) and the tool's version.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _input_name(path: str) -> str:
    import onnx

    model = onnx.load(path)
    inits = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def modelopt(setting: str, src: str, x: np.ndarray, out: str) -> str:
    import modelopt
    from modelopt.onnx.quantization import quantize

    method = "max" if setting.startswith("max") else "entropy"
    quantize(onnx_path=src, quantize_mode="int8", calibration_data={_input_name(src): x}, calibration_method=method,
             calibration_eps=["cpu"], output_path=out,
             high_precision_dtype="fp32" if setting.endswith("fp32") else "fp16")
    return str(modelopt.__version__)


def nncf(setting: str, src: str, x: np.ndarray, out: str) -> str:
    import nncf as lib
    import onnx

    name = _input_name(src)
    dataset = lib.Dataset([x[i:i + 32] for i in range(0, len(x), 32)], lambda b: {name: b})
    preset = lib.QuantizationPreset.PERFORMANCE if setting == "performance" else lib.QuantizationPreset.MIXED
    model = lib.quantize(onnx.load(src), dataset, preset=preset, subset_size=len(x))
    onnx.save(model, out)
    return str(lib.__version__)


def ort(setting: str, src: str, x: np.ndarray, out: str) -> str:
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    name = _input_name(src)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([x[i:i + 32] for i in range(0, len(x), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    if setting == "defaults":
        quantize_static(src, out, Reader())
    else:
        quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=CalibrationMethod.Percentile)
    return str(onnxruntime.__version__)


def main() -> int:
    tool, setting, src, calib, out = sys.argv[1:6]
    x = np.load(calib)["x"].astype(np.float32)
    run = {"modelopt": modelopt, "nncf": nncf, "ort": ort}[tool]
    start = time.perf_counter()
    version = run(setting, src, x, out)
    seconds = time.perf_counter() - start
    if not Path(out).is_file():
        raise SystemExit(f"{tool} {setting} wrote no {out}")
    print(json.dumps({"seconds": round(seconds, 2), "version": version}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
