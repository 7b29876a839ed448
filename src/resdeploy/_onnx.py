"""Small ONNX helpers shared by the stages: loading with clear errors, metadata, ORT sessions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

# The IR version resdeploy writes: onnx 1.23 writes 14 by default, while onnxruntime reads at most
# 13 (1.31), 10 (1.18-1.2x) or 9 (1.17, the floor); nothing resdeploy writes needs more than 9.
MAX_IR_VERSION = 10


def max_ir_version() -> int:
    """The IR version the installed onnxruntime reads (9 before 1.18)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            major, minor = (int(p) for p in version(dist).split(".")[:2])
        except (PackageNotFoundError, ValueError):
            continue
        return MAX_IR_VERSION if (major, minor) >= (1, 18) else 9
    return MAX_IR_VERSION


def _external_locations(model: onnx.ModelProto) -> list[str]:
    """The ``location`` of every tensor stored outside the .onnx file (initializers and
    attribute tensors, subgraphs included)."""
    from onnx.external_data_helper import _get_all_tensors

    locations = []
    for t in _get_all_tensors(model):
        if t.data_location == 1:  # TensorProto.EXTERNAL
            entry = {e.key: e.value for e in t.external_data}
            locations.append(entry.get("location", ""))
    return locations


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse, before reading anything, external data that points outside the model's folder
    (absolute paths, ``..``, symbolic links that leave it): an ONNX file is untrusted input."""
    folder = path.resolve().parent
    for loc in _external_locations(model):
        target = (folder / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(folder):
            raise UsageError(
                f"{path} stores tensor data at {loc!r}, outside its own folder; refusing to read it: keep the "
                "external data files beside the .onnx (re-save it with onnx.save(..., location=NAME))"
            )
        if not target.is_file():
            raise UsageError(f"{path} needs its external data file {loc!r} beside it; copy it there")


def load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file; its external data only from its own folder (see :func:`check_external_data`)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p} not found; check the path" if not p.is_dir() else f"{p} is a folder; give an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise UsageError(f"{p} is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    if not model.graph.node:
        raise UsageError(f"{p} holds no ONNX graph ({p.stat().st_size} bytes); re-export it")
    if _external_locations(model):
        check_external_data(model, p)
        load_external_data_for_model(model, str(p.resolve().parent))
    return model


def check_classifier(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """One N x C x H x W float input and one (N, classes) output, or a one-line error naming what was found."""
    image_input(model, path)
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        raise UsageError(f"{path} has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); resdeploy deploys "
                         "classifiers with one (N, classes) logits output: export only the logits")
    dims = outputs[0].type.tensor_type.shape.dim
    if outputs[0].type.tensor_type.HasField("shape") and len(dims) != 2:
        raise UsageError(f"{path}'s output {outputs[0].name!r} has rank {len(dims)}; a classifier returns "
                         "(N, classes) logits")


def _dims(shape: tuple[int | None, ...]) -> str:
    return " x ".join("N" if d is None else str(d) for d in shape)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set (overwrite) keys, keeping the others, in a stable sorted order."""
    merged = metadata(model)
    merged.update({k: str(v) for k, v in props.items()})
    del model.metadata_props[:]
    for k in sorted(merged):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, merged[k]


def cap_ir_version(model: onnx.ModelProto) -> None:
    cap = max_ir_version()
    if model.ir_version > cap:
        model.ir_version = cap


def exposing(model: onnx.ModelProto, tensors: Mapping[str, int] | list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (name -> element type, or names of
    float32 tensors), for calibration, per-layer SQNR and verify's layer search."""
    import onnx

    types = tensors if isinstance(tensors, Mapping) else dict.fromkeys(tensors, onnx.TensorProto.FLOAT)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name, elem_type in types.items():
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return probe


def serialize(model: onnx.ModelProto) -> bytes:
    cap_ir_version(model)
    return model.SerializeToString(deterministic=True)


def session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    *,
    threads: int | None = None,
    providers: list[Any] | None = None,
    optimization: str = "all",
    spin: bool = True,
) -> ort.InferenceSession:
    """An ONNX Runtime session (CPU by default); ``threads`` sets the intra-op pool size;
    ``spin=False`` stops idle pool threads busy-waiting (when other work shares the cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src: Any = model
    if hasattr(model, "SerializeToString"):
        src = serialize(model)  # type: ignore[arg-type]
    elif isinstance(model, (str, os.PathLike)):
        src = str(model)
    return ort.InferenceSession(src, opts, providers=providers or ["CPUExecutionProvider"])


_ELEM_NAMES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
               11: "float64", 16: "bfloat16"}


def _describe_input(value: Any) -> str:
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        return f"{value.name!r} (not a tensor)"
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
    shape = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")" if t.HasField("shape") else "(unknown shape)"
    return f"{value.name!r} {_ELEM_NAMES.get(t.elem_type, f'type {t.elem_type}')} {shape}"


def image_input(model: onnx.ModelProto, path: str | os.PathLike[str] | None = None) -> tuple[str, tuple[int | None, int, int, int]]:
    """The one image input: its name and shape (N, C, H, W), N None when the batch is dynamic
    (symbolic). Anything else (several inputs, an input that is not a float32 N x C x H x W
    tensor with fixed C, H, W) is a one-line error naming what was found."""
    where = f"{path}" if path is not None else "the model"
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        found = ", ".join(_describe_input(i) for i in inputs) or "none"
        raise UsageError(f"{where} has {len(inputs)} inputs ({found}); resdeploy deploys image classifiers with one "
                         "N x C x H x W input: export the model with a single image input")
    value = inputs[0]
    t = value.type.tensor_type
    dims = t.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if not value.type.HasField("tensor_type") or t.elem_type != 1 or len(shape) != 4 \
            or any(s is None for s in shape[1:]):
        raise UsageError(f"{where}'s input is {_describe_input(value)}, not a float32 N x C x H x W image tensor with "
                         "fixed C, H, W; resdeploy deploys image classifiers (export it at a fixed image size)")
    n, c, h, w = shape
    return value.name, (n, int(c or 0), int(h or 0), int(w or 0))


def precision(model: onnx.ModelProto) -> str:
    """fp32 | fp16 | int8: from resdeploy's metadata, else from the graph's ops and weights."""
    meta = metadata(model)
    if "resdeploy.precision" in meta:
        return meta["resdeploy.precision"]
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}:
        return "int8"
    if any(t.data_type == 10 for t in model.graph.initializer):  # FLOAT16
        return "fp16"
    return "fp32"


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
