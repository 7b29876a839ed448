"""The pipeline as a Python library: one function per stage, also reachable as ``resdeploy.NAME``
(loaded on first use: ``import resdeploy`` loads neither torch nor onnxruntime).

``export_model`` -> ``quantize_model`` -> ``build_engine`` (or ``engine_command``), measured by
``evaluate`` and ``bench``; ``run_pipeline`` runs them all into a folder, ``make_bundle`` and
``verify_bundle`` carry the proof to the device. Keyword arguments are the CLI's options with the
same defaults; results are typed and serialise to the CLI's JSON (``to_dict()``, ``to_json()``).
"""

from ._results import (
    BenchReport,
    BuildResult,
    BundleResult,
    EngineCommand,
    EvalReport,
    ExportResult,
    FoldResult,
    QuantizeResult,
    RunResult,
    VerifyReport,
)
from ._stages import (
    bench,
    build_engine,
    engine_command,
    evaluate,
    export_model,
    fold_bn,
    make_bundle,
    quantize_model,
    run_pipeline,
    verify_bundle,
)

__all__ = [
    "BenchReport",
    "BuildResult",
    "BundleResult",
    "EngineCommand",
    "EvalReport",
    "ExportResult",
    "FoldResult",
    "QuantizeResult",
    "RunResult",
    "VerifyReport",
    "bench",
    "build_engine",
    "engine_command",
    "evaluate",
    "export_model",
    "fold_bn",
    "make_bundle",
    "quantize_model",
    "run_pipeline",
    "verify_bundle",
]
