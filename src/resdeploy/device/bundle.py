"""The deploy bundle: what travels from the workstation to the device to prove, there, that the
engine computes what was proven here.

``bundle/`` holds the ONNX variants, ``trtexec.sh``, ``golden.npz`` (N validation images,
class-balanced and seeded, resized as uint8 so normalisation on the device is bit-for-bit the
workstation's, with their labels), ``expected.npz`` (each variant's logits on them from the
runtime that proved its accuracy, ONNX Runtime on the CPU, and the FP32 torch logits), a
Polygraphy data loader, and ``bundle.json``: format version, model, preprocessing, per-variant
sha256, tolerance and workstation accuracy, library versions and the machine. Every file is
hashed in ``bundle.json`` and ``bundle.json`` carries a checksum of itself, so a copy that was
altered or cut short is refused. No validation set, no torch checkpoint: a few MB beyond the
artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, _io, _onnx
from ..data import balanced_indices, load_dataset
from ..errors import UsageError
from ..models import ModelSpec
from ..preprocess import GivenPreprocess, Preprocess

log = logging.getLogger(__name__)

__all__ = ["BUNDLE_FORMAT", "TOLERANCES", "Bundle", "BundleSource", "BundleVariant", "Tolerance", "write_bundle"]

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"


@dataclass(frozen=True)
class Tolerance:
    """What a device run of a variant must meet against that variant's expected outputs."""

    min_agreement: float  # top-1 agreement with the expected outputs
    max_abs_err: float  # of the largest |expected logit|, a fraction
    layer_rel_err: float  # per intermediate tensor, ||a - b|| / ||b||, for the first divergent layer

    def to_dict(self) -> dict[str, float]:
        return {"min_agreement": self.min_agreement, "max_abs_err": self.max_abs_err, "layer_rel_err": self.layer_rel_err}

    def scaled(self, factor: float) -> Tolerance:
        """``factor`` times looser (or tighter): errors times ``factor``, disagreement too."""
        return Tolerance(max(0.0, 1.0 - (1.0 - self.min_agreement) * factor), self.max_abs_err * factor,
                         self.layer_rel_err * factor)


# Per precision, what a device run must meet against the workstation's expected outputs. Measured
# here, for scale: the demo's INT8 models on ONNX Runtime with and without its fused integer kernels
# differ on 0.4% of the golden images and by at most 0.9% of the largest logit; one convolution's
# weights perturbed by noise of twice their spread moves 1.2% of the images and 6% of the largest
# logit. FP32 allows kernel and accumulation-order differences (TF32 is off in resdeploy's FP32
# engines), FP16 its rounding, INT8 a requantization rounding that differs between TensorRT's fused
# kernels and ONNX Runtime's simulation. `resdeploy verify --scale-tolerance F` loosens them all.
TOLERANCES = {
    "fp32": Tolerance(0.995, 0.005, 1e-3),
    "fp16": Tolerance(0.99, 0.02, 1e-2),
    "int8": Tolerance(0.99, 0.05, 0.05),
}

_POLYGRAPHY_LOADER = '''"""Polygraphy data loader for this bundle's golden images:
polygraphy run MODEL.onnx --trt --onnxrt --data-loader-script polygraphy_data.py ..."""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_data():
    info = json.loads((HERE / "bundle.json").read_text())
    pre = info["model"]["preprocess"]
    golden = np.load(HERE / "golden.npz")
    x = golden["x"]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
        x -= np.asarray(pre["mean"], np.float32).reshape(1, -1, 1, 1)
        x /= np.asarray(pre["std"], np.float32).reshape(1, -1, 1, 1)
    for i in range(0, min(len(x), 32), 8):
        yield {info["model"]["input_name"]: np.ascontiguousarray(x[i:i + 8])}
'''


@dataclass(frozen=True)
class BundleVariant:
    name: str
    file: str
    sha256: str
    precision: str
    target: str
    tolerance: Tolerance
    workstation: dict[str, Any]


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _machine() -> dict[str, Any]:
    from .environment import environment

    env = environment(None, "bundle")
    return {"cpu": env["cpu"], "platform": env["platform"], "versions": env["versions"]}


def _golden(val: str, pre: Preprocess, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, labels, indices): class-balanced, seeded; uint8 images when the data are images."""
    dataset = load_dataset(val, default_split="test")
    idx = np.sort(balanced_indices(dataset.labels, min(n, len(dataset)), seed))
    x = dataset.take(idx, pre) if dataset.preprocessed else dataset.resized(idx, pre)
    return x, dataset.labels[idx], idx


def _inputs(x: np.ndarray, pre: Preprocess) -> np.ndarray:
    return pre.normalize(x) if x.dtype == np.uint8 else x.astype(np.float32)


def _expected(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    sess = _onnx.session(onnx_path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)]).astype(np.float32)


def _torch_logits(reference: Any, x: np.ndarray) -> np.ndarray:
    """The FP32 reference's logits: torch for a MODEL, ONNX Runtime for an ONNX from another tool."""
    from ..runtime.registry import open_session

    with open_session(reference, "torch" if reference.kind == "model" else "ort-cpu") as s:
        return s.logits(x, max_batch=64)


@dataclass(frozen=True)
class BundleSource:
    """What a bundle is made from: a run's ONNX variants (``name``, ``path``, ``precision``,
    ``target`` and workstation ``accuracy``, once each), the FP32 model, the validation data, the
    reference accuracy and the run's ``trtexec.sh``."""

    outdir: Path
    model: ModelSpec
    val: str
    variants: list[dict[str, Any]]
    reference_accuracy: dict[str, Any]

    @classmethod
    def from_report(cls, outdir: str | Path, report: dict[str, Any], model: ModelSpec, val: str) -> BundleSource:
        """From a run's report (in memory: the run hands it over; nothing is read back from disk)."""
        out = Path(outdir)
        return cls(out, model, val, _run_variants(out, report), report["reference"])

    @classmethod
    def read(cls, outdir: str | Path) -> BundleSource:
        """From a finished run's OUTDIR: its report.json names the variants, its manifest the settings."""
        out = Path(outdir)
        report, manifest = _read_run(out)
        cfg = manifest["config"]
        size = cfg.get("input_size")
        spec = ModelSpec(cfg["model"], weights=cfg.get("weights"), num_classes=cfg.get("num_classes"),
                         input_size=tuple(size) if isinstance(size, list) else size,
                         mean=tuple(cfg["mean"]) if cfg.get("mean") else None,
                         std=tuple(cfg["std"]) if cfg.get("std") else None, trust_pickle=bool(cfg.get("trust_pickle")))
        return cls.from_report(out, report, spec, cfg["val"])


def write_bundle(source: BundleSource | str | Path, *, images: int = 256, seed: int = 0,
                 dest: str | Path | None = None) -> Path:
    """The bundle (default ``OUTDIR/bundle/``) of a run, given as a :class:`BundleSource` or as a
    finished run's OUTDIR; returns the bundle folder. Rewritten whole, atomically per file."""
    from ..runtime.artifact import Artifact

    src = source if isinstance(source, BundleSource) else BundleSource.read(source)
    variants = src.variants
    first = Artifact.resolve(str(variants[0]["path"]))
    pre = first.preprocess()
    x_raw, labels, idx = _golden(src.val, pre, images, seed)
    x = _inputs(x_raw, pre)
    options = {k: v for k, v in asdict(src.model).items() if k != "spec"}
    reference = Artifact.resolve(src.model.spec, GivenPreprocess(src.model.input_size, src.model.mean, src.model.std),
                                 **options)
    bundle = _io.check_outdir(dest or src.outdir / "bundle")
    expected = {"reference": _torch_logits(reference, x)}
    entries = []
    for v in variants:
        path = Path(v["path"])
        _io.copy_file(path, bundle / path.name)
        expected[v["name"]] = _expected(bundle / path.name, x)
        entries.append({"name": v["name"], "file": path.name, "sha256": _io.sha256_file(bundle / path.name),
                        "precision": v["precision"], "target": v["target"],
                        "tolerance": TOLERANCES[v["precision"]].to_dict(), "workstation": v["accuracy"]})
    _write_arrays(bundle / "golden.npz", x=x_raw, y=labels.astype(np.int64), indices=idx.astype(np.int64))
    _write_arrays(bundle / "expected.npz", **expected)
    _io.copy_file(src.outdir / "trtexec.sh", bundle / "trtexec.sh")
    _io.write_text(bundle / "polygraphy_data.py", _POLYGRAPHY_LOADER)
    doc = _document(bundle, src, first, pre, entries, x_raw, images, seed)
    _io.write_json(bundle / MANIFEST, doc)
    log.info("bundle: %d variants, %d golden images -> %s", len(entries), len(labels), bundle)
    return bundle


def _read_run(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return json.loads((out / "report.json").read_text()), json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{out} is not a finished `resdeploy run` folder (no readable report.json and manifest.json); "
                         "run `resdeploy run -o OUTDIR` first") from exc


def _run_variants(out: Path, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The ONNX variants of a run, once each (a variant measured on several backends is one artifact)."""
    seen: dict[str, dict[str, Any]] = {}
    for v in report["variants"]:
        path = Path(v["artifact"])
        if path.suffix == ".onnx" and v["name"] not in seen:
            path = path if path.is_absolute() else out / path.name
            if not path.is_file():
                raise UsageError(f"{path} is missing from {out}; rerun `resdeploy run` to rebuild it")
            seen[v["name"]] = {**v, "path": path}
    if not seen:
        raise UsageError(f"{out}'s report names no ONNX variant; rerun `resdeploy run`")
    return list(seen.values())


def _write_arrays(path: Path, **arrays: np.ndarray) -> None:
    with _io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the kwargs as allow_pickle


def _document(bundle: Path, src: BundleSource, first: Any, pre: Preprocess,
              entries: list[dict[str, Any]], x_raw: np.ndarray, images: int, seed: int) -> dict[str, Any]:
    files = ["golden.npz", "expected.npz", "trtexec.sh", "polygraphy_data.py"]
    model = _onnx.load(first.path)
    doc: dict[str, Any] = {
        "format": "resdeploy-bundle", "format_version": BUNDLE_FORMAT, "resdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"spec": src.model.spec, "num_classes": int(first.metadata.get("resdeploy.num_classes", 0)),
                  "input_name": _onnx.image_input(model)[0], "output_name": model.graph.output[0].name,
                  "input_shape": list(pre.input_shape), "preprocess": pre.to_dict()},
        "golden": {"file": "golden.npz", "n": len(x_raw), "asked": images, "seed": seed, "data": src.val,
                   "encoding": "uint8 resized, normalised on load" if x_raw.dtype == np.uint8 else "float32"},
        "expected": {"file": "expected.npz", "from": f"onnxruntime {_ort_version()} CPUExecutionProvider",
                     "reference": f"torch FP32 {src.model.spec}"},
        "reference_accuracy": src.reference_accuracy,
        "variants": entries,
        "files": {name: _io.sha256_file(bundle / name) for name in files},
        "machine": _machine(),
    }
    doc["checksum"] = _checksum(doc)
    return doc


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


class Bundle:
    """A bundle read back on the device, every file checked against its recorded sha256."""

    def __init__(self, root: Path, doc: dict[str, Any]) -> None:
        self.root, self.doc = root, doc
        self.variants = [BundleVariant(v["name"], v["file"], v["sha256"], v["precision"], v["target"],
                                       Tolerance(**v["tolerance"]), v["workstation"]) for v in doc["variants"]]
        self.preprocess = Preprocess.from_dict(doc["model"]["preprocess"])  # format 1 before channels: 3, square

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        root = Path(path)
        doc_path = root / MANIFEST
        if not root.is_dir() or not doc_path.is_file():
            raise UsageError(f"{root} is not a resdeploy bundle (no {MANIFEST}); give the bundle/ folder "
                             "that `resdeploy run` or `resdeploy bundle OUTDIR` wrote")
        try:
            doc = json.loads(doc_path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{doc_path} is unreadable ({exc}); copy the bundle again") from exc
        if not isinstance(doc, dict) or doc.get("format") != "resdeploy-bundle":
            raise UsageError(f"{doc_path} is not a resdeploy bundle description; give the bundle/ folder")
        if doc.get("format_version") != BUNDLE_FORMAT:
            raise UsageError(f"{root} is bundle format {doc.get('format_version')}; this resdeploy reads format "
                             f"{BUNDLE_FORMAT}: use the resdeploy version that wrote it ({doc.get('resdeploy_version')})")
        if doc.get("checksum") != _checksum(doc):
            raise UsageError(f"{doc_path} was edited after it was written (checksum differs); copy the bundle again")
        try:
            bundle = cls(root, doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{doc_path} is malformed ({type(exc).__name__}: {exc}); copy the bundle again") from exc
        bundle.check_paths()
        bundle.check_files()
        return bundle

    def named_files(self) -> list[str]:
        """Every file name bundle.json names: its file table, the variants, the golden and expected arrays."""
        names = [*self.doc["files"], *(v.file for v in self.variants)]
        names += [self.doc.get(k, {}).get("file", "") for k in ("golden", "expected") if isinstance(self.doc.get(k), dict)]
        return [n for n in dict.fromkeys(names) if n != ""]

    def check_paths(self) -> None:
        """Every file bundle.json names must resolve inside the bundle folder: a relative path
        without ``..`` that no symbolic link leads out of. Checked before any of them is read: the
        checksum proves the description was not damaged, not who wrote it."""
        root = self.root.resolve()
        for name in self.named_files():
            if not isinstance(name, str):
                raise UsageError(f"{self.root / MANIFEST} names a file as {name!r}, not a path; copy the bundle again")
            rel = Path(name)
            escapes = rel.is_absolute() or bool(rel.drive) or ".." in rel.parts or "\\" in name  # no Windows paths either
            if not escapes:
                escapes = not (root / rel).resolve().is_relative_to(root)
            if escapes:
                raise UsageError(
                    f"{self.root / MANIFEST} names {name!r}, which lies outside the bundle folder; refusing to read it: "
                    "a bundle holds its files inside its own folder (use the bundle `resdeploy bundle` wrote)"
                )

    def check_files(self) -> None:
        recorded = {**self.doc["files"], **{v.file: v.sha256 for v in self.variants}}
        for name, sha in recorded.items():
            p = self.root / name
            if not p.is_file():
                raise UsageError(f"bundle file {p} is missing; copy the whole bundle folder again")
            if _io.sha256_file(p) != sha:
                raise UsageError(f"bundle file {p} was altered or cut short (sha256 differs); copy the bundle again")

    def variant(self, name: str) -> BundleVariant:
        for v in self.variants:
            if v.name == name:
                return v
        raise UsageError(f"the bundle has no variant {name!r}; it has {', '.join(v.name for v in self.variants)}")

    def variant_by_sha(self, sha256: str) -> BundleVariant | None:
        return next((v for v in self.variants if v.sha256 == sha256), None)

    def golden(self) -> tuple[np.ndarray, np.ndarray]:
        """(x float32 model inputs, labels)."""
        with np.load(self.root / "golden.npz", allow_pickle=False) as z:
            return _inputs(z["x"], self.preprocess), z["y"]

    def expected(self) -> dict[str, np.ndarray]:
        with np.load(self.root / "expected.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
