"""Bench conditions on a Jetson, read straight from sysfs (no ``tegrastats`` in the hot path).

What makes a Jetson latency believable: the L4T release (``/etc/nv_tegra_release``), the
nvpmodel power mode, whether ``jetson_clocks`` locked the clocks (GPU devfreq ``min_freq`` =
``max_freq``; otherwise DVFS moves latency around), the GPU and EMC frequencies and the
temperatures; and, sampled while timing, power per INA3221 rail and whether the GPU clock
dropped (thermal or power throttling). Every path is read under ``root`` so the tests can point
it at a fake tree; a node that is missing or unreadable is simply left out.

NOT RUN ON A JETSON BY THIS PROJECT: the paths are those JetPack 5-7 document (Orin's GPU
devfreq ``17000000.gpu``, JetPack 5's ``17000000.ga10b``, INA3221 hwmon nodes).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Sampler", "conditions", "is_jetson"]

_GPU_DEVFREQ = ("sys/class/devfreq/17000000.gpu", "sys/class/devfreq/17000000.ga10b", "sys/class/devfreq/gpu-gpc-0")
_EMC_RATE = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate")
_INA3221 = ("sys/bus/i2c/drivers/ina3221", "sys/bus/i2c/drivers/ina3221x")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def is_jetson(root: Path = Path("/")) -> bool:
    return (root / "etc/nv_tegra_release").is_file()


def _l4t(root: Path) -> dict[str, Any]:
    """``# R36 (release), REVISION: 4.3, ...`` -> ``36.4.3``."""
    line = (_read(root / "etc/nv_tegra_release") or "").splitlines()[0:1]
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line[0] if line else "")
    return {"l4t": f"{m.group(1)}.{m.group(2)}" if m else None, "model": (_read(root / "proc/device-tree/model") or "")
            .rstrip("\x00") or None}


def _nvpmodel(root: Path) -> dict[str, Any]:
    """The active mode from ``/var/lib/nvpmodel/status`` (``pmode:0002``), named by ``/etc/nvpmodel.conf``."""
    status = _read(root / "var/lib/nvpmodel/status") or ""
    m = re.search(r"pmode:(\d+)", status)
    if not m:
        return {}
    mode = int(m.group(1))
    names = dict(re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", _read(root / "etc/nvpmodel.conf") or ""))
    return {"nvpmodel_mode": mode, "nvpmodel_name": names.get(str(mode))}


def _gpu_devfreq(root: Path) -> Path | None:
    return next((root / p for p in _GPU_DEVFREQ if (root / p / "cur_freq").is_file()), None)


def _clocks(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gpu = _gpu_devfreq(root)
    if gpu is not None:
        cur, lo, hi = (_int(gpu / n) for n in ("cur_freq", "min_freq", "max_freq"))
        out.update({"gpu_freq_hz": cur, "gpu_min_freq_hz": lo, "gpu_max_freq_hz": hi,
                    "clocks_locked": lo is not None and lo == hi})
    emc = next((v for v in (_int(root / p) for p in _EMC_RATE) if v is not None), None)
    if emc is not None:
        out["emc_freq_hz"] = emc
    return out


def _temperatures(root: Path) -> dict[str, float]:
    temps = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        name, milli = _read(zone / "type"), _int(zone / "temp")
        if name and milli is not None and milli > -40000:
            temps[name] = milli / 1000.0
    return temps


def _rails(root: Path) -> dict[str, float]:
    """Power per INA3221 channel in milliwatts (``in*_input`` mV x ``curr*_input`` mA)."""
    power = {}
    for base in _INA3221:
        for hwmon in sorted((root / base).glob("*/hwmon/hwmon*")):
            for label_file in sorted(hwmon.glob("in*_label")):
                channel = label_file.name[2:].split("_")[0]
                label = _read(label_file)
                mv, ma = _int(hwmon / f"in{channel}_input"), _int(hwmon / f"curr{channel}_input")
                if label and mv is not None and ma is not None:
                    power[label] = mv * ma / 1000.0
    return power


def conditions(root: Path = Path("/")) -> dict[str, Any] | None:
    """What the board is doing now; None off a Jetson. ``warnings`` says what makes latency wander."""
    if not is_jetson(root):
        return None
    info: dict[str, Any] = {**_l4t(root), **_nvpmodel(root), **_clocks(root), "temperatures_c": _temperatures(root),
                            "power_mw": _rails(root)}
    warnings = []
    if info.get("clocks_locked") is False:
        warnings.append("Jetson clocks are not locked: latency will wander with DVFS; run `sudo jetson_clocks` "
                        "(and pick the power mode with `sudo nvpmodel -m N`) before benchmarking")
    info["warnings"] = warnings
    return info


class Sampler:
    """Samples power, temperatures and the GPU clock every ``period`` seconds while timing runs."""

    def __init__(self, root: Path = Path("/"), period: float = 0.1) -> None:
        self.root, self.period = root, period
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.active = is_jetson(root)

    def _sample(self) -> dict[str, Any]:
        gpu = _gpu_devfreq(self.root)
        return {"t": time.perf_counter(), "power_mw": _rails(self.root), "temperatures_c": _temperatures(self.root),
                "gpu_freq_hz": _int(gpu / "cur_freq") if gpu is not None else None}

    def _run(self) -> None:
        while True:
            self.samples.append(self._sample())
            if self._stop.wait(self.period):
                break

    def __enter__(self) -> Sampler:
        if self.active:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any] | None:
        """Mean and peak power per rail, peak temperatures, the GPU clock's range and whether it dropped."""
        if not self.samples:
            return None
        rails = {k for s in self.samples for k in s["power_mw"]}
        zones = {k for s in self.samples for k in s["temperatures_c"]}
        freqs = [s["gpu_freq_hz"] for s in self.samples if s["gpu_freq_hz"] is not None]
        vals = {r: [s["power_mw"][r] for s in self.samples if r in s["power_mw"]] for r in rails}
        return {
            "samples": len(self.samples),
            "power_mw": {r: {"mean": sum(v) / len(v), "max": max(v)} for r, v in sorted(vals.items())},
            "max_temperature_c": {z: max(s["temperatures_c"].get(z, float("-inf")) for s in self.samples)
                                  for z in sorted(zones)},
            "gpu_freq_hz": {"min": min(freqs), "max": max(freqs)} if freqs else None,
            "throttled": bool(freqs) and min(freqs) < max(freqs),
        }
