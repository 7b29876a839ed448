"""A real engine from the demo ONNX, run and compared with ONNX Runtime. Needs TensorRT and a
GPU: collected everywhere, skipped with a reason elsewhere (never run by this project yet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resdeploy._tensorrt import import_tensorrt
from resdeploy.engine import BuildConfig, build_engine
from resdeploy.runtime import Artifact, open_session

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_engine_matches_onnxruntime(zoo_onnx: Path, tmp_path: Path, cuda_graphs: bool) -> None:
    if import_tensorrt() is None:
        pytest.skip("TensorRT's Python bindings are not installed")
    from resdeploy.runtime import BackendOptions

    plan = tmp_path / "m.plan"
    build_engine(zoo_onnx, plan, BuildConfig(min_batch=1, opt_batch=4, max_batch=8))
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with open_session(Artifact.resolve(str(zoo_onnx)), "ort-cpu") as ref, \
            open_session(Artifact.resolve(str(plan)), "tensorrt", BackendOptions(cuda_graphs=cuda_graphs)) as eng:
        expected = ref.infer({"input": x})["logits"]
        got = eng.infer({"input": x})["logits"]
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
