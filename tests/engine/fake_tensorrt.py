"""A stand-in for the ``tensorrt`` module that fails where TensorRT fails (no machine here can
run TensorRT).

It implements the calls resdeploy makes, with the real API's names (checked separately by mypy
against tensorrt-stubs), and models per generation what the release branches' bindings
(``python/src/infer/pyCore.cpp``) and the developer guide say:

- enums: ``BuilderFlag.FP16/INT8`` exist in 8.6 and 10.x and are gone in 11 (so are BF16 and the
  precision-constraint flags); ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` exists up to
  10.x (ignored in 10) and is gone in 11, where ``STRONGLY_TYPED`` stays but is always on;
  ``IProgressMonitor`` from 10; ``DataType.BF16/INT64`` from 10;
- builds that TensorRT refuses return None with an ERROR in the log: a precision flag on a
  strongly typed network, a Q/DQ network built weakly typed without ``INT8`` (8.6), a DLA build
  when the device has no DLA core (11.0-11.3, 11.4.0 off Windows on Arm);
- ``create_timing_cache`` of unreadable bytes gives None (as Polygraphy guards it);
  ``set_timing_cache`` returns False for a cache from another device or release;
  ``add_optimization_profile`` returns -1 for an invalid profile (min > opt > max, none set);
- ``Runtime`` / ``ICudaEngine`` / ``IExecutionContext``: a DLA plan deserialised without
  ``runtime.DLA_core`` fails; ``set_input_shape`` outside the profile returns False;
  ``execute_async_v3`` reads the input buffer and writes logits into the output buffer through
  the addresses it was given (``memory`` maps an address to the test's CPU tensor);
- debug tensors (10.12+): ``mark_unfused_tensors_as_debug_tensors`` on the network, an
  ``IDebugListener`` on the context, ``unfused_tensors_debug_state``. With ``execute_onnx`` the
  engine computes the parsed ONNX itself (through ONNX Runtime), optionally with ``faults``
  (node name -> relative noise on its weights, a kernel bug stand-in), and hands the listener
  what ``include/NvInfer.h`` says it gets: the outputs of the engine's *fused* layers under
  TensorRT's *internal* names (those the engine inspector shows), not every unfused tensor
  (the pooling layers' are left out). The fused layers follow what TensorRT-RTX 1.7.1's builder
  made of resdeploy's INT8 ResNet-18 (its DETAILED build log): each convolution is a
  ``correlation`` layer whose output is the pre-bias accumulator (``__myln_k_arg__bb1_N_myl0``)
  and a ``kgen`` epilogue that adds the bias, the residual Add and the ReLU and quantizes
  (``<Q output>.1_N_myl0``, INT8 codes of the QuantizeLinear); each layer's metadata names its
  ONNX nodes ``[ONNX Layer: NODE]`` joined by ``\\x1f``, weight Q/DQ included.
  ``layer_information=False`` stands for an engine whose inspector names layers only;
- ``ProfilingVerbosity`` on the builder config and ``create_engine_inspector()`` /
  ``get_engine_information(LayerInformationFormat.JSON)``: the JSON of the engine's layers (Name,
  LayerType, Inputs, Outputs with Name/Dimensions/Format/Datatype, Metadata) at DETAILED, layer
  names only below it (as trex reads both);

- the ONNX parser rejects what NVIDIA's rejects (``_parser_rejection``; the parity test in
  ``test_rtx.py`` holds it to TensorRT-RTX's real parser on one catalogue of ONNX files):
  non-zero zero points, DequantizeLinear of int32 (quantized biases), uint8 Q/DQ (TensorRT
  only; TensorRT-RTX reads it), a DequantizeLinear fed by an int8 initialiser (8.6 only), ops
  with no importer (ONNX Runtime's QOperator format);
- ``make_fake("1.7.1.116", builder="tensorrt-rtx")`` is a ``tensorrt_rtx``: TensorRT 11's enums,
  ``ComputeCapability`` targets on the builder config, no DLA, timing cache calls that warn.

What it cannot prove: that TensorRT parses resdeploy's ONNX, which kernels it picks, that INT8
layers fuse, numerics, CUDA streams, events and graphs, or anything about a real device. Every
call is recorded in ``calls`` so tests can assert what the builder and runtime were told.
"""

from __future__ import annotations

import contextlib
import enum
import json
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

OTHER_DEVICE_CACHE = b"TIMING-CACHE-FROM-ANOTHER-GPU"
UNREADABLE_CACHE = b"NOT-A-TIMING-CACHE"  # create_timing_cache gives None
NUM_CLASSES = 10


def _version(version: str) -> tuple[int, int, int]:
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    return parts[0], parts[1], parts[2]


def _enums(major: int) -> dict[str, Any]:
    flags = ["DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "DIRECT_IO"]
    if major < 11:
        flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    if major == 10:
        flags += ["BF16"]
    creation = {8: ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"], 10: ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
                11: ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS"]}[major]
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["BF16", "INT64"] if major >= 10 else [])
    return {
        "BuilderFlag": enum.IntEnum("BuilderFlag", flags),
        # 11 keeps STRONGLY_TYPED at its 10.x value; EXPLICIT_BATCH (0) is gone.
        "NetworkDefinitionCreationFlag": enum.IntEnum("NetworkDefinitionCreationFlag", creation,
                                                      start=1 if major == 11 else 0),
        "MemoryPoolType": enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"]),
        "DeviceType": enum.IntEnum("DeviceType", ["GPU", "DLA"]),
        "DataType": enum.IntEnum("DataType", dtypes),
        "TensorIOMode": enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"]),
        "ProfilingVerbosity": enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0),
        "LayerInformationFormat": enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0),
    }


def _onnx_activations(path: str, x: np.ndarray, faults: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(logits, every float activation) of the ONNX at ``path`` with ``faults`` applied to weights."""
    import onnx
    from onnx import numpy_helper

    from resdeploy import _onnx
    from resdeploy.device.explain import _activations

    model = onnx.load(path)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name in faults:
            src = node.input[1]
            while src not in inits and src in producers:  # through the weight's Q/DQ
                src = producers[src].input[0]
            w = numpy_helper.to_array(inits[src])
            noise = np.random.default_rng(1).normal(0, faults[node.name] * np.abs(w).std(), w.shape)
            inits[src].CopyFrom(numpy_helper.from_array((w + noise).astype(w.dtype), src))
    names = _activations(model)
    names.update({n.output[0]: onnx.TensorProto.INT8 for n in model.graph.node  # the INT8 codes, too
                  if (n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[0] not in producers)
                  or (n.op_type == "QuantizeLinear" and n.input[0] in names)})
    sess = _onnx.session(_onnx.exposing(model, names))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x}), strict=True))
    for node in model.graph.node:  # a convolution's accumulator before its bias, as a correlation layer leaves it
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] in inits and node.output[0] in outs:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            outs[node.output[0] + "#before_bias"] = outs[node.output[0]] - bias.reshape(1, -1, *[1] * (outs[node.output[0]].ndim - 2))
    return outs[model.graph.output[0].name], outs


_ABBREVIATIONS = {"Add": "Add", "Relu": "Relu", "QuantizeLinear": "MulMinMaxRounCast", "Conv": "MulAdd", "Gemm": "MulAdd"}


def fused_layers(path: str) -> list[dict[str, Any]]:
    """The engine layers TensorRT-RTX 1.7.1's builder made of resdeploy's INT8 ResNet (its DETAILED
    build log), generalised to any ONNX: per layer its name, type, ONNX nodes (metadata), and
    its one output: (internal name, "Float"|"Int8", the ONNX tensor whose value it holds,
    dimensions). A convolution is a ``correlation`` (pre-bias accumulator) and a ``kgen``
    epilogue (bias, residual Add, ReLU, QuantizeLinear); DequantizeLinear nodes are named by the
    layer that consumes them; a weight's Q/DQ by its convolution."""
    import onnx

    model = onnx.load(path)
    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dims = {v.name: [-1, *[d.dim_value for d in v.type.tensor_type.shape.dim][1:]]
            for v in [*inferred.value_info, *g.output, *g.input]}
    constant = {t.name for t in g.initializer}
    weight_nodes: dict[str, Any] = {}
    for n in g.node:
        if n.op_type == "Constant" or all(i in constant for i in n.input if i):
            constant.update(n.output)
            weight_nodes[n.name] = n
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    done: set[str] = {i.name for i in g.input} | constant
    assigned: set[str] = set()
    layers: list[dict[str, Any]] = []

    def ready(t: str) -> bool:
        p = producers.get(t)
        return t in done or (p is not None and p.op_type == "DequantizeLinear" and ready(p.input[0]))

    def dq_of(t: str) -> list[str]:
        p = producers.get(t)
        return [p.name] if p is not None and p.op_type == "DequantizeLinear" and t not in constant else []

    def weights_of(n: Any) -> list[str]:
        found, todo = [], [i for i in n.input[1:] if i]
        while todo:
            p = producers.get(todo.pop())
            if p is not None and p.name in weight_nodes:
                found.append(p.name)
                todo += [i for i in p.input if i]
        return found

    def internal(t: str, int8: bool) -> str:
        k = len(layers) + 16
        return t if t in outputs else f"{t}.1_{k}_myl0" if int8 else f"__myln_k_arg__bb1_{k}_myl0"

    def add(name: str, kind: str, nodes: list[str], t: str, int8: bool) -> None:
        layers.append({"name": name, "type": kind, "nodes": list(dict.fromkeys(nodes)), "onnx": t, "int8": int8,
                       "output": internal(t, int8), "dims": dims.get(t, [])})
        done.add(t)

    def epilogue(first: Any, lead: list[str]) -> None:
        """``first`` (done or not) and the single-consumer Add/Relu after it, then its Q."""
        chain, extra, t = [first], [], first.output[0]
        while len(consumers.get(t, [])) == 1 and outputs.isdisjoint([t]):
            c = consumers[t][0]
            others = [i for i in c.input if i and i != t]
            if c.op_type not in ("Add", "Relu") or c.name in assigned or not all(ready(i) for i in others):
                break
            chain.append(c)
            extra += [d for i in others for d in dq_of(i)]
            t = c.output[0]
        nexts = consumers.get(t, [])
        q = nexts[0] if len(nexts) == 1 and nexts[0].op_type == "QuantizeLinear" and t not in outputs else None
        assigned.update(n.name for n in chain)
        names = lead + [n.name for n in chain] + extra + ([q.name] if q is not None else [])
        ops = "".join(_ABBREVIATIONS.get(n.op_type, n.op_type) for n in [*chain, *([q] if q is not None else [])])
        if q is not None:
            assigned.add(q.name)
            done.add(t)
            add(f"__myl_{ops}_myl0_{len(layers)}", "kgen", names, q.output[0], True)
        else:
            add(f"__myl_{ops}_myl0_{len(layers)}", "kgen", names, t, False)

    for n in g.node:
        if n.name in assigned or n.name in weight_nodes or n.op_type == "DequantizeLinear":
            continue
        if n.op_type in ("Conv", "Gemm"):
            assigned.add(n.name)
            lead = [n.name, *dq_of(n.input[0]), *weights_of(n)]
            has_bias = n.op_type == "Conv" and len(n.input) > 2 and bool(n.input[2])
            add(f"{n.name}_myl0_{len(layers)}", "correlation", lead,
                n.output[0] + ("#before_bias" if has_bias else ""), False)
            epilogue(n, [])
        elif n.op_type in ("Add", "Relu"):
            extra = [d for i in n.input for d in dq_of(i)]
            epilogue(n, extra)
        elif n.op_type == "QuantizeLinear":
            assigned.add(n.name)
            add(f"__myl_MulMinMaxRounCast_myl0_{len(layers)}", "kgen", [n.name], n.output[0], True)
        else:
            assigned.add(n.name)
            kind = {"MaxPool": "maxpool", "GlobalAveragePool": "kgen"}.get(n.op_type, "kgen")
            add(f"__mye{len(layers)}_{n.op_type.lower()}_myl0_{len(layers)}", kind,
                [n.name, *(d for i in n.input for d in dq_of(i))], n.output[0], False)
    return layers


def inspector_json(layers: list[dict[str, Any]], detailed: bool) -> str:
    """``get_engine_information(LayerInformationFormat.JSON)``: the layers with their I/O and
    metadata at DETAILED, names only below it."""
    if not detailed:
        return json.dumps({"Layers": [la["name"] for la in layers], "Bindings": ["input", "logits"]})
    out = []
    for la in layers:
        fmt = "Channel major Int8 format" if la["int8"] else "Row major linear FP32 format"
        out.append({"Name": la["name"], "LayerType": la["type"], "Inputs": [],
                    "Outputs": [{"Name": la["output"], "Dimensions": la["dims"], "Format/Datatype": fmt}],
                    "Metadata": "\x1f".join(f"[ONNX Layer: {n}]" for n in la["nodes"]),
                    "TacticName": "__myelin_CASK_STUB" if la["type"] == "correlation" else "", "StreamId": 0})
    return json.dumps({"Layers": out, "Bindings": ["input", "logits"]})


_NO_IMPORTER = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
                "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}


def _parser_rejection(path: str, generation: str) -> tuple[str, str] | None:
    """(node name, NVIDIA's reason) for the first node the ONNX parser of ``generation``
    ("8.6", "10", "11" or "rtx") rejects, or None. Modelled on the messages seen from TensorRT-RTX
    1.7.1's parser and those documented for TensorRT (TENSORRT.md)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in _NO_IMPORTER:
            return node.name, f"No importer registered for op: {node.op_type}"
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        x = consts.get(node.input[0])
        if node.op_type == "DequantizeLinear" and x is not None and x.dtype == np.int32:
            return node.name, f"{node.name}: input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8"
        if node.op_type == "DequantizeLinear" and x is not None and x.dtype == np.int8 and generation == "8.6":
            return node.name, "only activation types allowed as input to this layer"
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None and np.any(zp != 0):
            return node.name, "Assertion failed: shiftIsAllZeros(zeroPoint): Non-zero zero point is not supported"
        uint8 = (zp is not None and zp.dtype == np.uint8) or (zp is None and node.op_type == "QuantizeLinear")
        if uint8 and generation != "rtx":
            return node.name, "UINT8 quantization is only supported on DLA"
    return None


def make_fake(version: str, *, dla_cores: int | None = None, execute_onnx: bool = False,
              faults: dict[str, float] | None = None, builder: str = "tensorrt",
              layer_information: bool = True) -> types.ModuleType:
    rtx = builder == "tensorrt-rtx"
    major, minor, patch = (11, 0, 0) if rtx else _version(version)  # TensorRT-RTX's API is TensorRT 11's
    generation = "rtx" if rtx else "8.6" if major == 8 else str(major)
    calls: list[tuple[Any, ...]] = []
    m = types.ModuleType("tensorrt_rtx" if rtx else "tensorrt")
    m.__version__ = version
    m.calls = calls  # type: ignore[attr-defined]
    m.memory = {}  # type: ignore[attr-defined]  # device address -> the test's tensor
    enums = _enums(major)
    for name, obj in enums.items():
        setattr(m, name, obj)
    BuilderFlag, Creation, DataType = enums["BuilderFlag"], enums["NetworkDefinitionCreationFlag"], enums["DataType"]
    if rtx:
        m.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)  # type: ignore[attr-defined]
        m.ComputeCapability = enum.IntEnum(  # type: ignore[attr-defined]
            "ComputeCapability", {"NONE": 0, "CURRENT": 1, "SM75": 75, "SM80": 80, "SM86": 86, "SM89": 89,
                                  "SM120": 120, "SM121": 121})
        Creation = m.NetworkDefinitionCreationFlag  # type: ignore[attr-defined]
    if dla_cores is None:  # Orin has 2; TensorRT 11.0-11.4.0 on Jetson has none; TensorRT-RTX has no DLA
        dla_cores = 0 if rtx or (major == 11 and (minor, patch) < (4, 1)) else 2
    precision_flags = {f for f in ("FP16", "INT8", "BF16") if hasattr(BuilderFlag, f)}
    debug_api = (major, minor) >= (10, 12)

    class _Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        Severity = _Severity

        def __init__(self) -> None:
            pass

    def error(logger: Any, msg: str) -> None:
        calls.append(("log.error", msg))
        logger.log(_Severity.ERROR, msg)

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            calls.append(("profile.set_shape", name, tuple(mn), tuple(opt), tuple(mx)))
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Config:
        def __init__(self) -> None:
            self.flags = {BuilderFlag.TF32}  # TF32 is on by default, as in TensorRT
            self.default_device_type = enums["DeviceType"].GPU
            self.DLA_core = -1
            self.cache: TimingCache | None = None
            self.profiles: list[Profile] = []
            self.num_compute_capabilities = 0
            self.targets: dict[int, str] = {}
            self.profiling_verbosity = enums["ProfilingVerbosity"].LAYER_NAMES_ONLY

        def set_flag(self, flag: Any) -> None:
            calls.append(("config.set_flag", flag.name))
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            calls.append(("config.clear_flag", flag.name))
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("config.set_memory_pool_limit", pool.name, size))

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            calls.append(("config.create_timing_cache", bytes(data)))
            if rtx:
                import warnings

                warnings.warn("Timing cache operations are no-ops in TensorRT-RTX.", DeprecationWarning, stacklevel=2)
            if bytes(data).startswith(UNREADABLE_CACHE):
                return None
            return TimingCache(data)

        def set_compute_capability(self, cc: Any, index: int) -> bool:
            calls.append(("config.set_compute_capability", cc.name, index))
            if not rtx or cc.name == "NONE" or not 0 <= index < self.num_compute_capabilities:
                return False
            self.targets[index] = cc.name
            return True

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("config.set_timing_cache", cache.data))
            if cache.data.startswith(OTHER_DEVICE_CACHE) and not ignore_mismatch:
                return False  # a cache from another device or release
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("config.add_optimization_profile",))
            valid = bool(profile.shapes) and all(
                all(a <= b <= c for a, b, c in zip(mn, opt, mx, strict=True)) for mn, opt, mx in profile.shapes.values())
            if not valid:
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.has_qdq = False
            self.onnx_path = ""
            self.debug = False

        def __getattr__(self, name: str) -> Any:
            if name == "mark_unfused_tensors_as_debug_tensors" and debug_api:
                return lambda: setattr(self, "debug", True) or True
            raise AttributeError(name)

        @property
        def strongly_typed(self) -> bool:
            if major == 11 or rtx:
                return True
            return major == 10 and bool(self.flags & (1 << int(Creation.STRONGLY_TYPED)))

    class Builder:
        def __init__(self, logger: Any) -> None:
            assert isinstance(logger, ILogger)
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("builder.create_network", flags))
            if major == 11 and not rtx and flags & 1:
                raise TypeError("NetworkDefinitionCreationFlag.EXPLICIT_BATCH does not exist in TensorRT 11")
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def _refusal(self, network: Network, config: Config) -> str | None:
            set_precision = sorted(f.name for f in config.flags if f.name in precision_flags)
            if network.strongly_typed and set_precision:
                return f"API Usage Error (BuilderFlag {set_precision} not allowed on a strongly typed network)"
            if not network.strongly_typed and network.has_qdq and BuilderFlag.INT8 not in config.flags:
                return "Q/DQ layers need BuilderFlag.INT8 on a weakly typed network"
            if config.default_device_type == enums["DeviceType"].DLA and config.DLA_core >= self.num_DLA_cores:
                return f"Cannot create DLA engine, {config.DLA_core} not available"
            if not config.profiles:
                return "Network has dynamic or shape inputs, but no optimization profile has been defined"
            return None

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            state = {
                "network_flags": network.flags,
                "strongly_typed": network.strongly_typed,
                "flags": sorted(f.name for f in config.flags),
                "device": config.default_device_type.name,
                "dla_core": config.DLA_core,
                "monitor": getattr(config, "progress_monitor", None) is not None,
                "profile": [list(map(list, s)) for p in config.profiles for s in p.shapes.values()],
                "onnx": network.onnx_path,
                "debug": network.debug,
                "compute_capabilities": [config.targets.get(i) for i in range(config.num_compute_capabilities)],
                "profiling_verbosity": config.profiling_verbosity.name,
            }
            calls.append(("builder.build_serialized_network", state))
            reason = self._refusal(network, config)
            if reason:
                error(self.logger, reason)
                return None
            return b"FAKEPLAN" + json.dumps(state, sort_keys=True).encode()

    class ParserError:
        def __init__(self, node: str = "", text: str = "Unsupported ONNX op") -> None:
            self.node, self.text = node, text

        def desc(self) -> str:
            return f"Invalid Node - {self.node}\n{self.text}" if self.node else self.text

        def node_name(self) -> str:
            return self.node

    class OnnxParser:
        fail = False

        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.num_errors = 0
            self.flags: list[Any] = []
            self.errors: list[ParserError] = []

        def set_flag(self, flag: Any) -> None:
            calls.append(("parser.set_flag", flag.name))
            self.flags.append(flag)

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(("parser.parse_from_file", path))
            if OnnxParser.fail:
                self.errors, self.num_errors = [ParserError()], 1
                return False
            rejected = _parser_rejection(path, generation)
            if rejected is not None:
                self.errors, self.num_errors = [ParserError(*rejected)], 1
                return False
            self.network.has_qdq = any(n.op_type == "QuantizeLinear" for n in onnx.load(path).graph.node)
            self.network.onnx_path = path
            return True

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

    class Dims(tuple):
        pass

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.listener: Any = None
            self._debug_state = False

        def __getattr__(self, name: str) -> Any:
            if name == "unfused_tensors_debug_state" and debug_api:
                return self._debug_state
            raise AttributeError(name)

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "unfused_tensors_debug_state":
                if not debug_api:
                    raise AttributeError(name)
                name = "_debug_state"
            object.__setattr__(self, name, value)

        def set_debug_listener(self, listener: Any) -> bool:
            calls.append(("context.set_debug_listener",))
            self.listener = listener
            return bool(self.engine.state.get("debug"))

        def _emit_debug(self, tensors: dict[str, np.ndarray], stream: int) -> None:
            """The fused layers' outputs under TensorRT's internal names; INT8 as the codes."""
            for layer in self.engine.layers():
                if "pool" in layer["name"]:
                    continue  # "no guarantee that all unfused tensors are marked"
                value = tensors[layer["onnx"]]
                dtype = np.int8 if layer["int8"] else np.float32
                t = torch.from_numpy(np.ascontiguousarray(value, dtype=dtype))
                m.memory[t.data_ptr()] = t  # type: ignore[attr-defined]
                self.listener.process_debug_tensor(t.data_ptr(), None, DataType.INT8 if layer["int8"] else DataType.FLOAT,
                                                   tuple(t.shape), layer["output"], stream)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            calls.append(("context.set_input_shape", name, tuple(shape)))
            mn, _, mx = self.engine.profile
            if len(shape) != len(mn) or not all(a <= s <= b for a, s, b in zip(mn, shape, mx, strict=True)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == "logits":
                return (self.shapes["input"][0], NUM_CLASSES)
            return self.shapes[name]

        def set_tensor_address(self, name: str, address: int) -> bool:
            calls.append(("context.set_tensor_address", name))
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream: int) -> bool:
            calls.append(("context.execute_async_v3", stream))
            x = m.memory[self.addresses["input"]].float().numpy()  # type: ignore[attr-defined]
            if execute_onnx and self.engine.state.get("onnx"):
                logits, activations = _onnx_activations(self.engine.state["onnx"], x, faults or {})
                if self.listener is not None and self._debug_state:
                    self._emit_debug(activations, stream)
            else:
                logits = x.mean(axis=(2, 3)) @ self.engine.weights
            m.memory[self.addresses["logits"]].copy_(  # type: ignore[attr-defined]
                torch.from_numpy(logits.astype(np.float32)))
            return True

    class Engine:
        weights = np.random.default_rng(0).standard_normal((3, NUM_CLASSES)).astype(np.float32)

        def __init__(self, state: dict[str, Any]) -> None:
            self.state = state
            self.profile = [tuple(s) for s in state["profile"][0]]
            self.num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["input", "logits"][i]

        def get_tensor_mode(self, name: str) -> Any:
            mode = enums["TensorIOMode"]
            return mode.INPUT if name == "input" else mode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, 3, *self.profile[0][2:]) if name == "input" else (-1, NUM_CLASSES)

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self)

        def layers(self) -> list[dict[str, Any]]:
            if "_layers" not in self.__dict__:
                self._layers = fused_layers(self.state["onnx"]) if self.state.get("onnx") else []
            return self._layers

        def create_engine_inspector(self) -> EngineInspector:
            calls.append(("engine.create_engine_inspector",))
            return EngineInspector(self)

    class EngineInspector:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.execution_context: Any = None

        def get_engine_information(self, fmt: Any) -> str:
            assert fmt == enums["LayerInformationFormat"].JSON, fmt
            detailed = self.engine.state.get("profiling_verbosity") == "DETAILED" and layer_information
            return inspector_json(self.engine.layers(), detailed)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.DLA_core = -1
            self.num_DLA_cores = dla_cores

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            calls.append(("runtime.deserialize_cuda_engine", self.DLA_core))
            if not data.startswith(b"FAKEPLAN"):
                error(self.logger, "Serialization assertion failed: magic tag does not match")
                return None
            state = json.loads(data[len(b"FAKEPLAN"):])
            if state["device"] == "DLA" and self.DLA_core != state["dla_core"]:
                error(self.logger, f"engine was built for DLA core {state['dla_core']}; runtime DLA core is {self.DLA_core}")
                return None
            return Engine(state)

    for name, obj in dict(
        Dims=Dims, ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
    ).items():
        setattr(m, name, obj)
    if major >= 10:

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        m.IProgressMonitor = IProgressMonitor  # type: ignore[attr-defined]
    if debug_api:

        class IDebugListener:
            def __init__(self) -> None:
                pass

        m.IDebugListener = IDebugListener  # type: ignore[attr-defined]
    if major >= 11 or (major == 10 and minor >= 11):
        m.OnnxParserFlag = enum.IntEnum("OnnxParserFlag", ["NATIVE_INSTANCENORM", "ADJUST_FOR_DLA"])  # type: ignore[attr-defined]
    return m


# --- the CUDA side of a TensorRT session, on the CPU -----------------------------------------


class CpuEvent:
    def record(self, stream: Any = None) -> None:
        pass

    def elapsed_time(self, other: CpuEvent) -> float:
        return 0.25

    def synchronize(self) -> None:
        pass


class Replay:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn, self.replays = fn, 0

    def replay(self) -> None:
        self.replays += 1
        self.fn()


class CpuOps:
    """CudaOps' interface on the CPU; allocations are registered as the fake's device memory."""

    device = "cpu"
    stream = None
    stream_handle = 7
    host_memory = "pageable"

    def __init__(self, trt: Any, device: str = "cpu") -> None:
        self.trt, self.graphs = trt, []
        self.pinned_buffers: list[torch.Tensor] = []

    def empty(self, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        t = torch.empty(shape, dtype=dtype)
        self.trt.memory[t.data_ptr()] = t
        return t

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        self.pinned_buffers.append(torch.empty(shape, dtype=dtype))
        return self.pinned_buffers[-1]

    def discard_capture_error(self) -> None:
        pass

    def events(self, n: int) -> list[CpuEvent]:
        return [CpuEvent() for _ in range(n)]

    def on_stream(self) -> Any:
        return contextlib.nullcontext()

    def to_host(self, address: int, shape: tuple[int, ...], dtype: Any, stream: int, on_host: bool = False) -> np.ndarray:
        return self.trt.memory[address].numpy().reshape(shape).copy()

    def capture(self, fn: Callable[[], None]) -> Replay:
        self.graphs.append(Replay(fn))
        return self.graphs[-1]
