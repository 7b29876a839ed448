"""The house rules a reader relies on: small functions, one registry, one spec grammar, help
that shows each default once, no stage package named ``build``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from resdeploy.errors import ModelSpecError
from resdeploy.models import ParsedSpec, parse_model_spec

SRC = Path(__file__).resolve().parents[1] / "src" / "resdeploy"


def test_no_function_is_longer_than_70_lines() -> None:
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None
                if node.end_lineno - start + 1 > 70:
                    long.append(f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, long


def test_the_tensorrt_package_is_not_called_build() -> None:
    assert not (SRC / "build").exists() and (SRC / "engine").is_dir()
    assert not (SRC.parents[1] / "tests" / "build").exists()


def test_help_shows_each_default_once() -> None:
    for command in ("run", "bench", "eval", "quantize", "build", "export"):
        out = subprocess.run([sys.executable, "-m", "resdeploy", command, "--help"], capture_output=True, text=True,
                             env={"COLUMNS": "400", "PATH": ""}, check=True).stdout
        entries = " ".join(out.split()).split(" -")
        assert not [e for e in entries if e.count("(default") > 1], out
        assert "(default: None)" not in out


def test_bench_help_lists_every_registered_backend() -> None:
    from resdeploy.runtime import backend_names

    out = subprocess.run([sys.executable, "-m", "resdeploy", "bench", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert set(backend_names()) >= {"torch", "torch-cuda", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt"}
    for name in backend_names():
        assert f"{name}:" in " ".join(out.split()), name


@pytest.mark.parametrize("text, kind, name", [
    ("zoo:fashion-resnet18", "zoo", "fashion-resnet18"),
    ("resnet50", "builder", "resnet50"),
    ("wide_resnet101_2", "builder", "wide_resnet101_2"),
    ("mypkg.models:build_net", "factory", "mypkg.models:build_net"),
])
def test_one_parser_for_model_specs(text: str, kind: str, name: str) -> None:
    assert parse_model_spec(text) == ParsedSpec(kind, name)  # type: ignore[arg-type]


def test_model_spec_files_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "net.ts"
    f.write_bytes(b"x")
    assert parse_model_spec(str(f)).kind == "file" and parse_model_spec(str(f)).slug == "net"
    with pytest.raises(ModelSpecError, match="not found"):
        parse_model_spec(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelSpecError, match=r"unknown model 'resnet5'.*resnet50"):
        parse_model_spec("resnet5")
    assert parse_model_spec("zoo:fashion-resnet18").slug == "fashion-resnet18"


def test_dynamo_keyword_only_where_torch_has_it(monkeypatch) -> None:
    """torch < 2.5 (JetPack 6.0 has 2.3) has no `dynamo` parameter: passing it fails every export."""
    import torch
    import torchvision

    from resdeploy.export import ExportConfig
    from resdeploy.export.onnx_export import _torch_to_onnx

    real = torch.onnx.export
    seen = {}

    def old_export(model, args, f, export_params=True, verbose=False, training=None, input_names=None,
                   output_names=None, operator_export_type=None, opset_version=None, do_constant_folding=True,
                   dynamic_axes=None):
        seen["called"] = True
        return real(model, args, f, training=training, input_names=input_names, output_names=output_names,
                    opset_version=opset_version, do_constant_folding=do_constant_folding, dynamic_axes=dynamic_axes,
                    **({"dynamo": False} if "dynamo" in __import__("inspect").signature(real).parameters else {}))

    monkeypatch.setattr(torch.onnx, "export", old_export)
    model = torchvision.models.resnet18(num_classes=3).eval()
    proto = _torch_to_onnx(model, (3, 32, 32), ExportConfig())
    assert seen and any(n.op_type == "Conv" for n in proto.graph.node)


def test_nothing_needs_more_than_python_3_10() -> None:
    """JetPack 6 ships Python 3.10: vermin finds no newer syntax or stdlib use."""
    root = SRC.parents[1]
    vermin = Path(sys.executable).with_name("vermin")  # a console script of the dev extra
    r = subprocess.run([str(vermin), "-t=3.10-", "--violations", "--no-tips", "--eval-annotations",
                        str(SRC), str(root / "tests"), str(root / "benchmarks"), str(root / "tools")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC.parent / rel).with_suffix(".py").is_file() or (SRC.parent / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module of the package ``path`` imports: at module level, inside functions and under
    TYPE_CHECKING alike, relative imports resolved; ``from pkg import sub`` counts as ``pkg.sub``."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                found.add(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base)
    return {m for m in found if m.split(".")[0] == "resdeploy" and m != me}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other_in_a_loop() -> None:
    graph = {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}
    assert graph["resdeploy.pipeline.run"], "the import parser sees nothing"
    assert _cycles(graph) == []


def test_no_package_holds_more_than_a_fifth_of_the_lines() -> None:
    """Each top-level package does one job: none grows into a room that holds several."""
    lines = {p: len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    total = sum(lines.values())
    by_package: dict[str, int] = {}
    for p, n in lines.items():
        parts = p.relative_to(SRC).parts
        if len(parts) > 1:
            by_package[parts[0]] = by_package.get(parts[0], 0) + n
    assert len(by_package) >= 5
    assert {k: round(v / total, 3) for k, v in by_package.items() if v > total / 5} == {}
