"""resdeploy: a trained ResNet from PyTorch to a fast, verified edge deployment.

Stages live in :mod:`resdeploy.export`, :mod:`resdeploy.quantize`, :mod:`resdeploy.engine`
(TensorRT), :mod:`resdeploy.runtime` and :mod:`resdeploy.pipeline`; importing this package
loads none of torch, onnxruntime or TensorRT.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
