"""GPU backends; collected everywhere, skipped with a reason where no CUDA GPU is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resdeploy.runtime import Artifact, BackendOptions, open_session

pytestmark = pytest.mark.gpu


def test_torch_cuda_matches_cpu(zoo_onnx: Path) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    art = Artifact.resolve("zoo:fashion-resnet18")
    with open_session(art, "torch") as cpu, open_session(art, "torch-cuda") as gpu:
        a = cpu.infer({"input": x})["logits"]
        b, timing = gpu.timed({"input": x})
    np.testing.assert_allclose(a, b["logits"], rtol=1e-3, atol=1e-3)
    assert timing.h2d_ms > 0 and timing.compute_ms > 0


@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_ort_gpu_providers_match_cpu(zoo_onnx: Path, backend: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[backend]
    if provider not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no {provider} (install resdeploy[gpu])")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    art = Artifact.resolve(str(zoo_onnx))
    with open_session(art, "ort-cpu") as cpu, open_session(art, backend, BackendOptions(cache_dir=tmp_path)) as gpu:
        np.testing.assert_allclose(cpu.infer({"input": x})["logits"], gpu.infer({"input": x})["logits"], rtol=1e-2, atol=1e-2)
