"""The one path from an ONNX and a TensorRT (or TensorRT-RTX) release to a trtexec (or
tensorrt_rtx) command line, used by ``resdeploy build --print-trtexec``, by ``run``
(``trtexec.sh``) and by the deploy bundle. Only what the parser reads gets a command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _onnx
from ..errors import UsageError
from .builder import OnnxInfo, check_onnx
from .recipe import BuildConfig, Recipe, choose_recipe, format_command, profile_shapes, trtexec_command

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["GENERATIONS", "TrtexecLine", "trtexec_line", "trtexec_script"]

# One release per generation for the script (within a generation only DLA differs): the floor
# JetPack of each, and what `sh trtexec.sh` picks by the installed version's major number.
GENERATIONS = (("8.6", "8.6", "JetPack 6.0"), ("10", "10.3", "JetPack 6.1/6.2 (10.3), JetPack 7.0/7.1 (10.13)"),
               ("11", "11.4.1", "JetPack 7.2.2+, desktops"), ("rtx", "1.7.1", "RTX PCs: TensorRT-RTX's tensorrt_rtx"))
_TOOL = {"rtx": ('tensorrt_rtx ', '"$TENSORRT_RTX" ')}


@dataclass(frozen=True)
class TrtexecLine:
    recipe: Recipe
    argv: list[str]

    @property
    def text(self) -> str:
        return format_command(self.argv)


def trtexec_line(info: OnnxInfo, plan: str, trt_version: str, config: BuildConfig, *, onnx: str | None = None,
                 builder: str = "tensorrt", model: ModelProto | None = None) -> TrtexecLine:
    """The recipe for ``trt_version`` of ``builder`` and the trtexec (tensorrt_rtx) command that
    builds ``plan`` from ``info``; an ONNX the parser would reject is refused (UsageError).
    ``model``: ``info.path`` already loaded (the script checks each ONNX for every release)."""
    recipe = choose_recipe(trt_version, info.precision, config, builder)
    check_onnx(info.path, builder, recipe.generation, model=model)
    shapes = profile_shapes(info.input_shape, config)
    argv = trtexec_command(onnx or str(info.path), plan, input_name=info.input_name, shapes=shapes,
                           recipe=recipe, config=config)
    return TrtexecLine(recipe, argv)


_HEADER = """#!/bin/sh
# trtexec equivalents of `resdeploy build`, one block per TensorRT generation.
# usage: sh trtexec.sh [TENSORRT_VERSION]     (default: the installed one)
# Run it on the device, beside the ONNX files; TRTEXEC=path overrides where trtexec is.
set -eu
cd "$(dirname "$0")"
TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
TENSORRT_RTX=${TENSORRT_RTX:-tensorrt_rtx}
V=${1:-$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)}
if [ -z "$V" ] && python3 -c 'import tensorrt_rtx' 2>/dev/null; then V=rtx; fi
if [ -z "$V" ] && command -v dpkg-query >/dev/null 2>&1; then
  V=$(dpkg-query -W -f='${Version}' libnvinfer-bin 2>/dev/null | cut -d- -f1 || true)
fi
case "$V" in
  8.6*) GEN=8.6 ;;
  10.*) GEN=10 ;;
  11.*) GEN=11 ;;
  rtx*) GEN=rtx ;;
  *) echo "trtexec.sh: cannot tell the TensorRT version (got '$V'); pass it: sh trtexec.sh 10.3 (or rtx)" >&2; exit 2 ;;
esac
echo "TensorRT $V: building with the recipe for TensorRT $GEN" >&2
"""


def trtexec_script(entries: Sequence[tuple[OnnxInfo, str]], config: BuildConfig) -> str:
    """A POSIX sh script building every (ONNX, plan name) with the recipe of the installed
    TensorRT generation; paths are relative to the script's folder."""
    lines = [_HEADER]
    models = {str(info.path): _onnx.load(info.path) for info, _ in entries}  # read once, checked per release
    for gen, version, where in GENERATIONS:
        lines.append(f'if [ "$GEN" = {gen} ]; then  # {where}')
        builder = "tensorrt-rtx" if gen == "rtx" else "tensorrt"
        tool, var = _TOOL.get(gen, ("trtexec ", '"$TRTEXEC" '))
        for info, name in entries:
            plan = str(Path(name).with_suffix(".engine")) if builder == "tensorrt-rtx" else name  # as `run` names them
            try:
                line = trtexec_line(info, plan, version, config, onnx=Path(info.path).name, builder=builder,
                                    model=models[str(info.path)])
            except UsageError as exc:
                lines.append(f"  # {Path(info.path).name}: not buildable here: {exc}")
                continue
            lines.append(f'  echo "building {plan}" >&2')
            lines.append("  " + line.text.replace(tool, var, 1))
        lines.append("fi")
    return "\n".join(lines) + "\n"
