"""Bench conditions on a Jetson, read straight from sysfs (no ``tegrastats`` in the hot path),
where and in the units jetson_stats (jtop, the tool Jetson users trust for these readings) reads
them: ``jtop/core/jetson_variables.py``, ``gpu.py``, ``memory.py``, ``power.py`` (INA238: its
PR #900), ``jetson_clocks.py``, ``nvpmodel.py`` and ``hw_detect.py``.

What makes a Jetson latency believable:

- the board: the L4T release from ``/etc/nv_tegra_release``, else (containers, NVIDIA's l4t
  images too, often lack the file) from the ``nvidia-l4t-core`` package in dpkg's database, and
  the device-tree model; a board with neither file nor package is still recognised by its
  device tree (``l4t`` is then None);
- the nvpmodel power mode: ``/var/lib/nvpmodel/status`` (``pmode:0002``) named by
  ``/etc/nvpmodel.conf``, else what ``nvpmodel -q`` prints (``NV Power Mode: MAXN`` then the id);
- whether the clocks are locked (what ``jetson_clocks`` does), as jtop decides it: every online
  CPU core's cpufreq min = max, the GPU devfreq min = max, and the EMC at its maximum where its
  maximum can be read;
- the GPU clock (devfreq ``17000000.gpu`` on Orin, ``gpu-gpc-0`` on Thor; Hz) and the EMC clock
  (Thor: the ``bwmgr`` devfreq node, readable by anyone; Orin: the BPMP debugfs clock, root only;
  Hz), the thermal zones (m°C);
- sampled while timing, power per connected rail in mW: INA3221 channels (mV x mA, without the
  rails labelled NC and without channel 7, the "sum of shunt voltages"), and Thor's INA238
  system input (``power1_input`` in µW) as ``VIN``; and whether the GPU clock dropped while the
  clocks were locked (throttling: under DVFS a lower clock is normal, not throttling).

Every path is read under ``root`` so the tests can point it at a fake tree; a node that is
missing or unreadable is simply left out.

NOT RUN ON A JETSON BY THIS PROJECT: tested against fake sysfs trees laid out as jtop reads an
AGX Orin (JetPack 6 and 7.2, INA3221) and an AGX Thor (JetPack 7, INA3221 + INA238, bwmgr).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Sampler", "conditions", "is_jetson"]

# Thor's GPC domain first (jtop's THOR_GPC), then the nvgpu devfreq names of Orin (JetPack 6/7.2)
# and JetPack 5; other devfreq nodes are taken when their of_node is a GPU (jtop's gpu.py).
_GPU_DEVFREQ = ("gpu-gpc-0", "17000000.gpu", "17000000.ga10b")
_GPU_OF_NODE_NAMES = {"gv11b", "gp10b", "ga10b", "gb10b", "gpu"}
_EMC_DEVFREQ = "sys/class/devfreq/bwmgr"  # Thor (jtop memory.py, PR #900)
_EMC_DEBUGFS = "sys/kernel/debug/bpmp/debug/clk/emc"  # Orin, readable by root only
_EMC_DEBUGFS_OLD = "sys/kernel/debug/clk/emc/clk_rate"
_I2C_DEVICES = "sys/bus/i2c/devices"
_INA3221_SUM_CHANNEL = 7  # "sum of shunt voltages", not a rail
_TEMPERATURE_OFFLINE_MC = -40000  # zones reading -40 °C or below (jtop: -256 °C) are offline
_NVPMODEL_TIMEOUT_S = 5.0


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


def _root(root: str | os.PathLike[str]) -> Path:
    return Path(root)


def _model(root: Path) -> str | None:
    for rel in ("sys/firmware/devicetree/base/model", "proc/device-tree/model"):
        text = (_read(root / rel) or "").rstrip("\x00").strip()
        if text:
            return text
    return None


def _l4t_core_version(root: Path) -> str | None:
    """The installed ``nvidia-l4t-core`` version (``36.4.3-20250107174145`` -> ``36.4.3``) from
    dpkg's database: what jtop asks ``dpkg-query`` for when ``/etc/nv_tegra_release`` is missing."""
    status = _read(root / "var/lib/dpkg/status") or ""
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.MULTILINE))
        if fields.get("Package") == "nvidia-l4t-core" and "installed" in fields.get("Status", "").split():
            return fields.get("Version", "").split("-")[0] or None
    return None


def _l4t(root: Path) -> str | None:
    """``# R36 (release), REVISION: 4.3, ...`` -> ``36.4.3``; else the nvidia-l4t-core package."""
    first = (_read(root / "etc/nv_tegra_release") or "").splitlines()[0:1]
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first[0] if first else "")
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    return _l4t_core_version(root)


def is_jetson(root: str | os.PathLike[str] = "/") -> bool:
    """``/etc/nv_tegra_release``, the ``nvidia-l4t-core`` package, or a Jetson device tree."""
    r = _root(root)
    if (r / "etc/nv_tegra_release").is_file() or _l4t_core_version(r):
        return True
    compatible = (_read(r / "proc/device-tree/compatible") or "").lower()
    return "jetson" in (_model(r) or "").lower() or "nvidia,tegra" in compatible


def _nvpmodel_binary(root: Path) -> str | None:
    for rel in ("usr/sbin/nvpmodel", "usr/bin/nvpmodel"):
        if os.access(root / rel, os.X_OK) and (root / rel).is_file():
            return str(root / rel)
    return shutil.which("nvpmodel") if root == Path("/") else None


def _nvpmodel_query(root: Path) -> dict[str, Any]:
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` and, on the next line, the mode's id (jtop's
    ``nvpmodel_query``)."""
    binary = _nvpmodel_binary(root)
    if binary is None:
        return {}
    try:
        out = subprocess.run([binary, "-q"], capture_output=True, text=True, timeout=_NVPMODEL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [ln.strip() for ln in out.stdout.splitlines()]
    for i, line in enumerate(lines):
        m = re.search(r"NV Power Mode:\s*(\S+)", line)
        if m:
            mode = lines[i + 1] if i + 1 < len(lines) else ""
            return {"nvpmodel_mode": int(mode) if mode.isdigit() else None, "nvpmodel_name": m.group(1)}
    return {}


def _nvpmodel(root: Path) -> dict[str, Any]:
    """The active mode from ``/var/lib/nvpmodel/status`` named by ``/etc/nvpmodel.conf``, else
    from ``nvpmodel -q``."""
    m = re.search(r"pmode:(\d+)", _read(root / "var/lib/nvpmodel/status") or "")
    if not m:
        return _nvpmodel_query(root)
    mode = int(m.group(1))
    names = dict(re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", _read(root / "etc/nvpmodel.conf") or ""))
    return {"nvpmodel_mode": mode, "nvpmodel_name": names.get(str(mode))}


def _gpu_devfreq(root: Path) -> Path | None:
    devfreq = root / "sys/class/devfreq"
    for name in _GPU_DEVFREQ:
        if (devfreq / name / "cur_freq").is_file():
            return devfreq / name
    for node in sorted(devfreq.glob("*")):
        of_name = (_read(node / "device/of_node/name") or "").rstrip("\x00").lower()
        if (of_name in _GPU_OF_NODE_NAMES or "gpu" in of_name) and (node / "cur_freq").is_file():
            return node
    return None


def _gpu_freq(root: Path) -> int | None:
    gpu = _gpu_devfreq(root)
    return _int(gpu / "cur_freq") if gpu is not None else None


def _emc(root: Path) -> dict[str, int]:
    """The EMC clock in Hz: Thor's ``bwmgr`` devfreq node, else Orin's BPMP debugfs clock."""
    bwmgr = root / _EMC_DEVFREQ
    if (bwmgr / "cur_freq").is_file():
        found = {"cur": _int(bwmgr / "cur_freq"), "min": _int(bwmgr / "min_freq"), "max": _int(bwmgr / "max_freq")}
    else:
        debugfs = root / _EMC_DEBUGFS
        found = {"cur": _int(debugfs / "rate"), "min": _int(debugfs / "min_rate"), "max": _int(debugfs / "max_rate")}
        if found["cur"] is None:
            found["cur"] = _int(root / _EMC_DEBUGFS_OLD)
    return {k: v for k, v in found.items() if v is not None}


def _cpus_locked(root: Path) -> bool | None:
    """Every online core's cpufreq ``scaling_min_freq`` = ``scaling_max_freq`` (None: no cpufreq)."""
    verdicts = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*")):
        if _read(cpu / "online") == "0":
            continue
        lo, hi = _int(cpu / "cpufreq/scaling_min_freq"), _int(cpu / "cpufreq/scaling_max_freq")
        if lo is not None and hi is not None:
            verdicts.append(lo == hi)
    return all(verdicts) if verdicts else None


def _clocks(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    locked: dict[str, bool] = {}
    gpu = _gpu_devfreq(root)
    if gpu is not None:
        cur, lo, hi = (_int(gpu / n) for n in ("cur_freq", "min_freq", "max_freq"))
        out.update({"gpu_freq_hz": cur, "gpu_min_freq_hz": lo, "gpu_max_freq_hz": hi})
        if lo is not None and hi is not None:
            locked["gpu"] = lo == hi
    cpus = _cpus_locked(root)
    if cpus is not None:
        locked["cpu"] = cpus
    emc = _emc(root)
    if "cur" in emc:
        out["emc_freq_hz"] = emc["cur"]
    if "max" in emc:
        out["emc_max_freq_hz"] = emc["max"]
        if "cur" in emc:
            locked["emc"] = emc["cur"] == emc["max"]  # jtop: EMC checked only where its maximum is known
    if locked:
        out["clocks_locked"] = all(locked.values()) if "gpu" in locked else None  # no GPU clock: unknown
        out["locked"] = locked
    return out


def _temperatures(root: Path) -> dict[str, float]:
    temps = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        name, milli = _read(zone / "type"), _int(zone / "temp")
        if name and milli is not None and milli > _TEMPERATURE_OFFLINE_MC:
            temps[name] = milli / 1000.0
    return temps


def _power_monitors(root: Path) -> list[tuple[str, Path]]:
    """(driver, hwmon folder) of every INA3221 and INA238 on the I2C bus, as jtop finds them."""
    found = []
    for dev in sorted((root / _I2C_DEVICES).glob("*")):
        driver = (_read(dev / "name") or "").lower()
        if "ina3221" in driver or "ina238" in driver:
            for hwmon in sorted(dev.glob("hwmon/hwmon*")):
                found.append(("ina238" if "ina238" in driver else "ina3221", hwmon))
    return found


def _is_nc(label: str) -> bool:
    return re.search(r"(^|[^A-Za-z])NC([^A-Za-z]|$)", label) is not None


def _ina3221(hwmon: Path) -> dict[str, float]:
    """mW per connected channel: ``in*_input`` (mV) x ``curr*_input`` (mA) / 1000."""
    power = {}
    for label_file in sorted(hwmon.glob("in*_label")):
        channel = label_file.name[2:].split("_")[0]
        label = _read(label_file)
        if not label or not channel.isdigit() or int(channel) == _INA3221_SUM_CHANNEL or _is_nc(label) \
                or "sum of shunt" in label.lower():
            continue
        mv, ma = _int(hwmon / f"in{channel}_input"), _int(hwmon / f"curr{channel}_input")
        if mv is not None and ma is not None:
            power[label] = mv * ma / 1000.0
    return power


def _ina238(hwmon: Path) -> dict[str, float]:
    """Thor's carrier-board system input: ``power1_input`` in µW, else mV x mA (jtop names it VIN)."""
    uw = _int(hwmon / "power1_input")
    if uw is not None:
        return {"VIN": uw / 1000.0}
    mv, ma = _int(hwmon / "in1_input"), _int(hwmon / "curr1_input")
    return {"VIN": mv * ma / 1000.0} if mv is not None and ma is not None else {}


def _rails(root: Path) -> dict[str, float]:
    power: dict[str, float] = {}
    for driver, hwmon in _power_monitors(root):
        power.update(_ina238(hwmon) if driver == "ina238" else _ina3221(hwmon))
    return power


def conditions(root: str | os.PathLike[str] = "/") -> dict[str, Any] | None:
    """What the board is doing now; None off a Jetson. ``warnings`` says what makes latency wander."""
    r = _root(root)
    if not is_jetson(r):
        return None
    info: dict[str, Any] = {"l4t": _l4t(r), "model": _model(r), **_nvpmodel(r), **_clocks(r),
                            "temperatures_c": _temperatures(r), "power_mw": _rails(r)}
    warnings = []
    if info.get("clocks_locked") is False:
        unlocked = ", ".join(k.upper() for k, v in info["locked"].items() if not v)
        warnings.append(f"Jetson clocks are not locked ({unlocked}): latency will wander with DVFS; run "
                        "`sudo jetson_clocks` (and pick the power mode with `sudo nvpmodel -m N`) before benchmarking")
    info["warnings"] = warnings
    return info


class Sampler:
    """Samples power, temperatures and the GPU clock every ``period`` seconds while timing runs."""

    def __init__(self, root: str | os.PathLike[str] = "/", period: float = 0.1) -> None:
        self.root, self.period = _root(root), period
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.active = is_jetson(self.root)
        self.clocks_locked: bool | None = None
        self._locked_gpu_hz: int | None = None

    def _sample(self) -> dict[str, Any]:
        return {"t": time.perf_counter(), "power_mw": _rails(self.root), "temperatures_c": _temperatures(self.root),
                "gpu_freq_hz": _gpu_freq(self.root)}

    def _run(self) -> None:
        while True:
            self.samples.append(self._sample())
            if self._stop.wait(self.period):
                break

    def __enter__(self) -> Sampler:
        if self.active:
            clocks = _clocks(self.root)
            self.clocks_locked, self._locked_gpu_hz = clocks.get("clocks_locked"), clocks.get("gpu_max_freq_hz")
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any] | None:
        """Mean and peak power per rail, peak temperatures, the GPU clock's range, and
        ``throttled``: whether the GPU clock dropped while the clocks were locked (None when they
        were not locked: under DVFS a lower clock is the governor's choice, not throttling)."""
        if not self.samples:
            return None
        rails = {k for s in self.samples for k in s["power_mw"]}
        zones = {k for s in self.samples for k in s["temperatures_c"]}
        freqs = [s["gpu_freq_hz"] for s in self.samples if s["gpu_freq_hz"] is not None]
        vals = {r: [s["power_mw"][r] for s in self.samples if r in s["power_mw"]] for r in rails}
        throttled = None
        if self.clocks_locked and freqs:  # below the frequency jetson_clocks locked it at
            throttled = min(freqs) < (self._locked_gpu_hz or max(freqs))
        return {
            "samples": len(self.samples),
            "power_mw": {r: {"mean": sum(v) / len(v), "max": max(v)} for r, v in sorted(vals.items())},
            "max_temperature_c": {z: max(s["temperatures_c"].get(z, float("-inf")) for s in self.samples)
                                  for z in sorted(zones)},
            "gpu_freq_hz": {"min": min(freqs), "max": max(freqs)} if freqs else None,
            "clocks_locked": self.clocks_locked,
            "throttled": throttled,
        }
