"""Files a user hands in are untrusted: an ONNX whose external data points outside its folder is
refused before anything is read, and ONNX models that are not image classifiers are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from .conftest import assert_clean_error


def _classifier(outputs: int = 1, channels: int = 3) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, channels, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])]
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 8, 8])],
                              outs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _with_external_weight(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    w = model.graph.initializer[0]
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(4 * 4 * 3 * 3 * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    w.ClearField("raw_data")
    return model


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused_unread(tmp_path: Path, run_cli, location: str, monkeypatch) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 1000)
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "m.onnx"
    path.write_bytes(_with_external_weight(_classifier(), location).SerializeToString())
    opened: list[str] = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    r = run_cli("bench", path, "--in-process", "--iters", "1")
    monkeypatch.undo()
    assert_clean_error(r, 2, "outside its own folder", "refusing to read it")
    assert not any("secret.bin" in f or f == "/etc/hostname" for f in opened), opened


def test_a_symlink_leaving_the_folder_is_refused(tmp_path: Path, run_cli) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 1000)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    path = folder / "m.onnx"
    path.write_bytes(_with_external_weight(_classifier(), "w.bin").SerializeToString())
    assert_clean_error(run_cli("bench", path, "--in-process", "--iters", "1"), 2, "outside its own folder")


def test_external_data_beside_the_model_is_read(tmp_path: Path) -> None:
    from resdeploy import _onnx

    model = _classifier()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").is_file()
    loaded = _onnx.load(tmp_path / "m.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), expected)


# (A 1-channel classifier is served now; inputs that are not images: tests/test_channels.py.)
@pytest.mark.parametrize("outputs, channels, needle", [(2, 3, "2 outputs")])
def test_onnx_models_that_are_not_classifiers_are_named(tmp_path: Path, run_cli, outputs, channels, needle) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_classifier(outputs, channels), str(path))
    assert_clean_error(run_cli("bench", path, "--iters", "1"), 2, needle)
