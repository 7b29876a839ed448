"""ONNX node -> torch module: which ``layer3.0.conv2`` an ONNX ``Conv`` came from.

The TorchScript exporter names nodes after the module scope (``/layer2/layer2.0/downsample/
downsample.0/Conv``: each level's name is prefixed by its parent's local name inside
Sequentials); weights keep their parameter names (``layer2.0.downsample.0.weight``). The map is
computed at export, checked against the module's own names, and stored in the ONNX metadata
(``resdeploy.node_modules``) so that quantize, verify and the reports can name modules for any
later variant (they keep the Conv and Add node names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["META_KEY", "module_of", "node_modules", "read_node_modules"]

META_KEY = "resdeploy.node_modules"
_SUFFIX = re.compile(r"_\d+$")


def _from_scope(node_name: str, known: Collection[str] | None) -> str | None:
    """``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0``; with
    ``known`` the longest path that names a real module, without it the whole path."""
    parts = [p for p in node_name.split("/") if p][:-1]  # the last part is the op
    path: list[str] = []
    last = ""
    for part in parts:
        local = part[len(last) + 1:] if last and part.startswith(last + ".") else part
        path.append(local)
        last = part
    if known is None:
        return ".".join(path) or None
    while path:
        name = ".".join(path)
        if name in known:
            return name
        stripped = _SUFFIX.sub("", path[-1])  # a module called twice: relu, relu_1
        if stripped != path[-1] and ".".join([*path[:-1], stripped]) in known:
            return ".".join([*path[:-1], stripped])
        path.pop()
    return None


def _from_weight(node: onnx.NodeProto, initializers: Collection[str]) -> str | None:
    """``layer3.0.conv2.weight`` -> ``layer3.0.conv2`` (for graphs without scope names)."""
    for name in node.input[1:2]:
        if name in initializers and name.endswith(".weight"):
            return name[: -len(".weight")]
    return None


def node_modules(model: onnx.ModelProto, known_modules: Collection[str]) -> dict[str, str]:
    """Every Conv, Add and Gemm node mapped to the torch module it was exported from."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Add", "Gemm", "MatMul"):
            continue
        module = _from_weight(node, inits) or _from_scope(node.name, known_modules)
        if module is not None and (not known_modules or module in known_modules):
            out[node.name] = module
    return out


def read_node_modules(metadata: Mapping[str, str]) -> dict[str, str]:
    try:
        data = json.loads(metadata.get(META_KEY, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def module_of(node: onnx.NodeProto, table: Mapping[str, str], initializers: Collection[str] = ()) -> str:
    """The module for ``node``: from the export's table, else its weight's name, else ``?``."""
    return table.get(node.name) or _from_weight(node, initializers) or _from_scope(node.name, None) or "?"
