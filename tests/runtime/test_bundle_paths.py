"""A bundle's files stay in its folder: a bundle.json naming anything outside it (``..``, an
absolute path, a symbolic link that leaves the folder) is refused with exit 2 before any file it
names is read, even with its checksum recomputed (the checksum proves integrity, not authorship)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resdeploy import _io, _onnx
from resdeploy.device.bundle import BUNDLE_FORMAT, MANIFEST, _checksum

from ..conftest import assert_clean_error


def _write_bundle(folder: Path, variant_file: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": "resdeploy-bundle", "format_version": BUNDLE_FORMAT, "resdeploy_version": "0",
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"spec": "m", "num_classes": 10, "input_name": "input", "output_name": "logits",
                  "preprocess": {"input_size": 28, "channels": 1, "mean": [0.5], "std": [0.5], "resize_size": None,
                                 "interpolation": "bilinear"}},
        "golden": {"file": "golden.npz", "n": 1}, "expected": {"file": "expected.npz"},
        "variants": [{"name": "fp32", "file": variant_file, "sha256": "0" * 64, "precision": "fp32", "target": "cpu",
                      "tolerance": {"min_agreement": 0.99, "max_abs_err": 0.01, "layer_rel_err": 0.001},
                      "workstation": {}}],
        "files": files if files is not None else {"golden.npz": "0" * 64},
        "machine": {},
    }
    doc["checksum"] = _checksum(doc)  # recomputed: the description is intact, only its paths are hostile
    (folder / MANIFEST).write_text(json.dumps(doc))
    return folder


@pytest.fixture
def nothing_is_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file verify would hash or load, recorded: none must be."""
    seen: list[str] = []

    def record(fn):  # type: ignore[no-untyped-def]
        def wrapped(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(str(path))
            return fn(path, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(_io, "sha256_file", record(_io.sha256_file))
    monkeypatch.setattr(_onnx, "load", record(_onnx.load))
    return seen


def test_a_variant_outside_the_folder_is_refused_before_it_is_read(tmp_path: Path, run_cli, nothing_is_read) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not read")
    bundle = _write_bundle(tmp_path / "bundle", "../outside.onnx")
    r = run_cli("verify", bundle)
    assert_clean_error(r, 2, "'../outside.onnx'", "outside the bundle folder")
    assert nothing_is_read == []


@pytest.mark.parametrize("name", ["/etc/passwd", "sub/../../outside.onnx", "..\\outside.onnx"])
def test_absolute_and_parent_paths_are_refused(tmp_path: Path, run_cli, nothing_is_read, name: str) -> None:
    bundle = _write_bundle(tmp_path / "bundle", "m.onnx", {name: "0" * 64})
    r = run_cli("verify", bundle)
    assert_clean_error(r, 2, "outside the bundle folder")
    assert nothing_is_read == []


def test_a_symbolic_link_leaving_the_folder_is_refused(tmp_path: Path, run_cli, nothing_is_read) -> None:
    (tmp_path / "secret.npz").write_bytes(b"not read")
    bundle = _write_bundle(tmp_path / "bundle", "m.onnx")
    (bundle / "golden.npz").symlink_to(tmp_path / "secret.npz")
    r = run_cli("verify", bundle)
    assert_clean_error(r, 2, "'golden.npz'", "outside the bundle folder")
    assert nothing_is_read == []
