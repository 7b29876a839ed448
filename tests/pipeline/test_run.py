"""run: the report keys of CONTRACT.md, the manifest, readable plots, reuse of finished
stages, the Triton repository parsed with Triton's own schema, and TOML configs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from resdeploy._io import sha256_file

from ..conftest import assert_clean_error


def test_report_has_the_contract_keys(demo_run) -> None:
    out, _, report, _ = demo_run
    assert {"model", "reference", "stages", "variants"} <= set(report)
    assert set(report["reference"]) >= {"top1", "top5", "n"} and report["reference"]["n"] == 500
    for s in report["stages"]:
        assert set(s) >= {"name", "seconds", "artifact"}
    kinds = {(v["precision"], v["target"]) for v in report["variants"] if v["backend"] == "ort-cpu"}
    assert {("fp32", "cpu"), ("fp16", "tensorrt"), ("int8", "cpu"), ("int8", "tensorrt")} <= kinds
    for v in report["variants"]:
        assert set(v) >= {"name", "precision", "target", "backend", "artifact", "accuracy", "latency_ms", "throughput_ips"}
        assert v["precision"] in ("fp32", "fp16", "int8") and v["target"] in ("cpu", "tensorrt")
        a = v["accuracy"]
        assert a["n"] == 500 and 0.0 <= a["top1"] <= a["top5"] <= 1.0 and 0.0 <= a["agreement_top1"] <= 1.0
        lat = v["latency_ms"]
        assert lat["batch"] == 1 and lat["p50"] <= lat["p90"] <= lat["p99"]
        assert [b["batch"] for b in v["by_batch"]] == [1, 8]
    int8 = [v for v in report["variants"] if v["precision"] == "int8"]
    assert all(v["accuracy"]["agreement_top1"] >= 0.97 for v in int8)
    assert "--stronglyTyped" in (out / "trtexec.sh").read_text()
    md = (out / "report.md").read_text()
    assert md.splitlines()[0].startswith("# resdeploy report") and "| int8-tensorrt |" in md
    for v in report["variants"]:
        lo, hi = v["accuracy"]["top1_ci95"]
        assert lo <= v["accuracy"]["top1"] <= hi
        if v["backend"] not in ("torch", "torch-cuda"):
            assert 0.0 <= v["accuracy"]["drop_p_value"] <= 1.0
    assert "distinguishable from zero" in md and "drift most from FP32" in md
    assert len(report["quantize"]["int8-tensorrt"]["layers"]) == 28


def test_report_says_which_gpu_backends_ran_and_what_the_others_lack(demo_run) -> None:
    out, _, report, _ = demo_run
    gpu = report["gpu"]
    by = {b["name"]: b for b in gpu["backends"]}
    assert {"torch-cuda", "ort-cuda", "ort-trt", "tensorrt"} <= set(by)
    for b in by.values():
        assert b["ran"] == any(v["backend"] == b["name"] for v in report["variants"])
        assert b["ran"] or (isinstance(b["missing"], str) and b["missing"])
    md = (out / "report.md").read_text()
    assert "## GPU" in md
    if gpu["devices"]:  # a GPU machine: the torch reference is measured on it too
        assert by["torch-cuda"]["ran"] and f"GPU: {gpu['devices'][0]['name']}" in md
        cuda = [v for v in report["variants"] if v["backend"] == "torch-cuda"]
        assert cuda and cuda[0]["accuracy"]["agreement_top1"] == 1.0
    else:
        assert not any(b["ran"] for b in by.values()) and "No CUDA GPU is visible here" in md
        assert "pip install" in by["ort-cuda"]["missing"] and "pip install" in by["tensorrt"]["missing"]


def test_only_tensorrt_rtx_installed_builds_every_tensorrt_variant(demo_run) -> None:
    """No TensorRT here, TensorRT-RTX installed (the rtx extra, x86_64): the build stage builds an
    engine of each TensorRT-targeted variant with NVIDIA's builder, says which builder accepted it,
    and the cpu profile reaches neither a parser nor trtexec.sh."""
    import platform

    out, _, report, _ = demo_run
    if platform.machine().lower() not in ("x86_64", "amd64"):
        build = next(s for s in report["stages"] if s["name"] == "build")
        assert "TensorRT-RTX" in build["skipped"]
        pytest.skip(f"TensorRT-RTX publishes no wheel for {platform.machine()}")
    import tensorrt_rtx

    engines = {e["variant"]: e for e in report["engines"]}
    assert set(engines) == {"fp32", "fp16", "int8-tensorrt"}
    for name, e in engines.items():
        assert e["builder"] == "tensorrt-rtx" and e["builder_version"] == tensorrt_rtx.__version__
        assert e["compute_capabilities"] == "default" and e["runnable_here"] is False  # no RTX GPU here
        engine = Path(e["artifact"])
        assert engine.name == f"fashion-resnet18-{name}.engine" and engine.stat().st_size > 5_000_000
        assert json.loads((engine.parent / (engine.name + ".json")).read_text())["builder"]["family"] == "tensorrt-rtx"
    assert {s["name"] for s in report["stages"]} >= {"build:fp32", "build:fp16", "build:int8-tensorrt"}
    assert "build:int8-cpu" not in {s["name"] for s in report["stages"]}
    script = (out / "trtexec.sh").read_text()
    assert "int8-cpu" not in script and script.count('"$TENSORRT_RTX" --onnx=') == 3
    assert "--saveEngine=fashion-resnet18-int8-tensorrt.engine --minShapes=input:1x3x32x32" in script
    assert "built by tensorrt-rtx" in (out / "report.md").read_text()
    assert not {v["backend"] for v in report["variants"]} & {"tensorrt", "tensorrt-rtx"}, "nothing here runs them"


def test_manifest_lists_every_file_with_its_hash(demo_run) -> None:
    out, repo, _, _ = demo_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("resdeploy run") and manifest["versions"]["onnxruntime"]
    listed = {}
    for entry in manifest["artifacts"]:
        p = Path(entry["path"]) if Path(entry["path"]).is_absolute() else out / entry["path"]
        assert p.is_file(), p
        assert sha256_file(p) == entry["sha256"] and p.stat().st_size == entry["bytes"]
        listed[p.resolve()] = entry
    on_disk = {p.resolve() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
               and not p.name.startswith(".resdeploy-")}
    assert on_disk <= set(listed)
    assert any(str(repo.resolve()) in str(p) for p in listed)


def test_plots_are_real_pngs(demo_run) -> None:
    out, _, _, _ = demo_run
    for name in ("latency_by_batch.png", "accuracy_vs_latency.png", "layer_sqnr.png"):
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 500
            assert len(im.convert("L").getcolors(256) or []) > 20, "more than a blank canvas"


def test_second_run_reuses_every_stage(demo_run) -> None:
    _, _, first, second = demo_run
    assert not any(s.get("reused") for s in first["stages"])
    done = [s for s in second["stages"] if not s.get("skipped")]
    assert done and all(s["reused"] for s in done)
    assert [v["latency_ms"] for v in first["variants"]] == [v["latency_ms"] for v in second["variants"]]


def _model_config():
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("tritonclient (a dev dependency) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.ModelConfig


def test_triton_repository_parses_with_tritons_schema(demo_run) -> None:
    from google.protobuf import text_format

    _, repo, _, _ = demo_run
    ModelConfig = _model_config()
    models = sorted(p for p in repo.iterdir() if p.is_dir())
    assert [m.name for m in models] == sorted(f"fashion-resnet18-{v}" for v in ("fp32", "fp16", "int8-cpu", "int8-tensorrt"))
    for m in models:
        cfg = text_format.Parse((m / "config.pbtxt").read_text(), ModelConfig())
        assert cfg.name == m.name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
        assert [i.name for i in cfg.input] == ["input"] and list(cfg.input[0].dims) == [3, 32, 32]
        assert [o.name for o in cfg.output] == ["logits"] and list(cfg.output[0].dims) == [10]
        assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 8]
        assert (m / "1" / "model.onnx").is_file()


def test_toml_config_and_flag_override(tmp_path: Path, run_cli, monkeypatch) -> None:
    from resdeploy.pipeline import RunConfig, load_config

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('model = "resnet18"\ninput-size = 32\nprecisions = ["fp32", "int8"]\ntargets = "cpu"\nbatches = [2]\n')
    settings = load_config(cfg_file)
    assert settings == {"model": "resnet18", "input_size": 32, "precisions": ("fp32", "int8"), "targets": ("cpu",), "batches": (2,)}
    assert RunConfig(**settings).calib == "fashion-mnist:train"
    cfg_file.write_text('calib-size = "many"\n')
    assert_clean_error(run_cli("run", cfg_file, "-o", tmp_path / "o"), 2, "calib-size must be int")
    cfg_file.write_text('modle = "resnet18"\n')
    assert_clean_error(run_cli("run", cfg_file, "-o", tmp_path / "o"), 2, "unknown setting 'modle'")
    assert_clean_error(run_cli("run", tmp_path / "missing.toml"), 2, "not found")
    assert_clean_error(run_cli("run", "--precisions", "int4", "-o", tmp_path / "o"), 2, "precisions")


def test_one_run_writes_report_and_manifest_once_each(tmp_path: Path, run_cli, monkeypatch) -> None:
    """The bundle takes the run's report in memory: nothing is written twice or read back."""
    import resdeploy._io as io

    written: list[str] = []
    real_json, real_text = io.write_json, io.write_text
    monkeypatch.setattr(io, "write_json", lambda path, *a, **k: (written.append(Path(path).name), real_json(path, *a, **k))[1])
    monkeypatch.setattr(io, "write_text", lambda path, *a, **k: (written.append(Path(path).name), real_text(path, *a, **k))[1])
    out = tmp_path / "out"
    r = run_cli("run", "--precisions", "fp32", "--batch", "1", "--val-limit", "64", "--iters", "3", "--warmup", "1",
                "-o", out)
    assert r.code == 0, r.err
    assert written.count("report.json") == 1 and written.count("manifest.json") == 1, written
    assert written.count("report.md") == 1 and written.count("bundle.json") == 1, written
    manifest = json.loads((out / "manifest.json").read_text())
    assert "bundle/bundle.json" in {a["path"] for a in manifest["artifacts"]}


def test_run_config_composes_the_stage_configs() -> None:
    """RunConfig's fields are the stages' own config types, not copies of their fields."""
    import dataclasses
    import typing

    from resdeploy.engine import BuildConfig
    from resdeploy.measure import BenchConfig, EvalConfig
    from resdeploy.models import ModelSpec
    from resdeploy.pipeline import RunConfig
    from resdeploy.quantize import QuantizeConfig

    hints = typing.get_type_hints(RunConfig)
    stages = {"model": ModelSpec, "quantize": QuantizeConfig, "build": BuildConfig, "bench": BenchConfig,
              "eval": EvalConfig}
    assert {k: hints[k] for k in stages} == stages
    copied = {f.name for f in dataclasses.fields(RunConfig)} & {f.name for c in stages.values() for f in dataclasses.fields(c)}
    # `val` is the run's validation data: an argument of eval and the bundle (EvalConfig holds no
    # data), which the run hands to quantize as its accuracy budget's data.
    assert copied == {"val"}, copied
    assert RunConfig(val="v.npz").quantize.val == "v.npz"
    cfg = RunConfig(calib_size=64, batches=(1, 4), val_limit=10)
    assert cfg.quantize.calib_size == 64 and cfg.bench.batches == (1, 4) and cfg.build.opt_batch == 4
    assert cfg.eval.limit == 10 and cfg.quantize.calib_method == QuantizeConfig(precision="fp16").calib_method  # declared once


def test_list_flags_parse_as_in_toml(tmp_path: Path, run_cli) -> None:
    """One list parser: `--precisions "fp32, int8"` is the TOML's `precisions = "fp32, int8"`."""
    from resdeploy.cli import build_parser
    from resdeploy.pipeline import SETTINGS, load_config, run_config

    args = vars(build_parser().parse_args(["run", "--precisions", "fp32, int8", "--targets", " cpu", "--batch", "1, 8"]))
    cfg = run_config(None, {k: args.get(k) for k in (*SETTINGS, "batch") if k not in ("batches", "trust_pickle")})
    assert cfg.precisions == ("fp32", "int8") and cfg.targets == ("cpu",) and cfg.batches == (1, 8)
    toml = tmp_path / "c.toml"
    toml.write_text('precisions = "fp32, int8"\nbatch = "1, 8"\n')
    assert run_config(toml, {}).precisions == cfg.precisions and load_config(toml)["batches"] == (1, 8)
    assert_clean_error(run_cli("run", "--calib-method", "median", "-o", tmp_path / "o"), 2, "calib-method")
    assert_clean_error(run_cli("run", "--batch", "1,abc", "-o", tmp_path / "o"), 2, "--batch must be a list of int")
