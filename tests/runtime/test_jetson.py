"""Jetson bench conditions read from fake sysfs trees laid out where and in the units jetson_stats
(jtop) reads them: an AGX Orin on JetPack 6 (INA3221, BPMP debugfs EMC), the same Orin on JetPack
7.2 in a container (no /etc/nv_tegra_release, no nvpmodel status file, debugfs unreadable), and
an AGX Thor on JetPack 7 (INA3221 module rails plus an INA238 system input in µW, the ``bwmgr``
devfreq EMC, the ``gpu-gpc-0`` devfreq GPU)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from resdeploy.runtime.jetson import Sampler, conditions, is_jetson


def _put(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _cpus(root: Path, n: int, lo: int, hi: int, offline: tuple[int, ...] = ()) -> None:
    """cpufreq in kHz, as the kernel writes it; an offline core may keep any range."""
    for i in range(n):
        base = f"sys/devices/system/cpu/cpu{i}"
        if i:
            _put(root, f"{base}/online", "0\n" if i in offline else "1\n")
        _put(root, f"{base}/cpufreq/scaling_min_freq", f"{115200 if i in offline else lo}\n")
        _put(root, f"{base}/cpufreq/scaling_max_freq", f"{hi}\n")


def _ina3221(root: Path, device: str, hwmon: str, channels: dict[int, tuple[str, int, int]]) -> None:
    """channel -> (label, mV, mA); the INA3221 driver's hwmon files."""
    _put(root, f"sys/bus/i2c/devices/{device}/name", "ina3221\n")
    hw = f"sys/bus/i2c/devices/{device}/hwmon/{hwmon}"
    for ch, (label, mv, ma) in channels.items():
        _put(root, f"{hw}/in{ch}_label", f"{label}\n")
        _put(root, f"{hw}/in{ch}_input", f"{mv}\n")
        _put(root, f"{hw}/curr{ch}_input", f"{ma}\n")


def _thermal(root: Path, zones: dict[str, int]) -> None:
    for i, (name, milli) in enumerate(zones.items()):
        _put(root, f"sys/class/thermal/thermal_zone{i}/type", f"{name}\n")
        _put(root, f"sys/class/thermal/thermal_zone{i}/temp", f"{milli}\n")


def fake_orin(root: Path, *, locked: bool, gpu_hz: int = 1_300_500_000, jetpack: int = 6) -> Path:
    """AGX Orin 64GB. JetPack 6: L4T R36.4.3 with its release file, nvpmodel's status file and a
    readable BPMP debugfs (as root). JetPack 7.2 in a container: neither file, the L4T version in
    dpkg's database, ``nvpmodel -q`` answering, debugfs unreadable (not root)."""
    model = "NVIDIA Jetson AGX Orin Developer Kit\x00"
    _put(root, "proc/device-tree/model", model)
    _put(root, "sys/firmware/devicetree/base/model", model)
    _put(root, "proc/device-tree/compatible", "nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00")
    if jetpack == 6:
        _put(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, "
                                           "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n")
        _put(root, "var/lib/nvpmodel/status", "pmode:0000 fmode:quiet\n")
        _put(root, "etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n"
                                        "< POWER_MODEL ID=1 NAME=MODE_15W >\n< POWER_MODEL ID=2 NAME=MODE_30W >\n")
        emc = "sys/kernel/debug/bpmp/debug/clk/emc"
        _put(root, f"{emc}/rate", "3199000000\n")
        _put(root, f"{emc}/max_rate", "3199000000\n")
        _put(root, f"{emc}/min_rate", "204000000\n")
    else:
        _put(root, "var/lib/dpkg/status",
             "Package: nvidia-l4t-cuda\nStatus: install ok installed\nVersion: 39.2.0-20260301000000\n\n"
             "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\n"
             "Version: 39.2.0-20260301000000\nDescription: NVIDIA Core Package\n\n")
        nvpmodel = root / "usr/sbin/nvpmodel"
        _put(root, "usr/sbin/nvpmodel", "#!/bin/sh\n[ \"$1\" = -q ] || exit 1\n"
                                        "echo 'NV Power Mode: MODE_30W'\necho 2\n")
        nvpmodel.chmod(nvpmodel.stat().st_mode | stat.S_IXUSR)
    gpu = "sys/class/devfreq/17000000.gpu"
    _put(root, f"{gpu}/device/of_node/name", "gpu\x00")
    _put(root, f"{gpu}/cur_freq", f"{gpu_hz}\n")
    _put(root, f"{gpu}/max_freq", "1300500000\n")
    _put(root, f"{gpu}/min_freq", "1300500000\n" if locked else "306000000\n")
    _cpus(root, 4, 2201600 if locked else 115200, 2201600, offline=(3,))
    _thermal(root, {"cpu-thermal": 47500, "gpu-thermal": 45250, "tj-thermal": 48000, "tboard-thermal": -256000})
    # AGX Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 on 1-0040 (channel 7 its sum), NC on 1-0041.
    _ina3221(root, "1-0040", "hwmon3", {1: ("VDD_GPU_SOC", 5000, 1200), 2: ("VDD_CPU_CV", 5000, 400),
                                        3: ("VIN_SYS_5V0", 5000, 1000), 7: ("sum of shunt voltages", 5000, 2600)})
    _ina3221(root, "1-0041", "hwmon4", {1: ("VDDQ_VDD2_1V8AO", 5000, 160), 2: ("NC", 0, 0), 3: ("NC", 0, 0)})
    return root


def fake_thor(root: Path, *, locked: bool, gpu_hz: int = 1_575_000_000) -> Path:
    """AGX Thor developer kit on JetPack 7 (L4T R38.2): the GPU behind the ``gpu-gpc-0`` devfreq
    domain, EMC through the ``bwmgr`` devfreq node (Hz), module rails on an INA3221 and the
    carrier board's system input on an INA238 whose ``power1_input`` is in µW."""
    _put(root, "etc/nv_tegra_release", "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64\n")
    _put(root, "proc/device-tree/model", "NVIDIA Jetson AGX Thor Developer Kit\x00")
    _put(root, "var/lib/nvpmodel/status", "pmode:0000 fmode:default\n")
    _put(root, "etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=120W >\n")
    gpc = "sys/class/devfreq/gpu-gpc-0"
    _put(root, f"{gpc}/cur_freq", f"{gpu_hz}\n")
    _put(root, f"{gpc}/max_freq", "1575000000\n")
    _put(root, f"{gpc}/min_freq", "1575000000\n" if locked else "300000000\n")
    _put(root, "sys/class/devfreq/gpu-nvd-0/cur_freq", "1000000000\n")  # the video decoder, not the GPU
    bwmgr = "sys/class/devfreq/bwmgr"
    _put(root, f"{bwmgr}/cur_freq", "4266000000\n" if locked else "2133000000\n")
    _put(root, f"{bwmgr}/max_freq", "4266000000\n")
    _put(root, f"{bwmgr}/min_freq", "4266000000\n" if locked else "665600000\n")
    _put(root, f"{bwmgr}/governor", "performance\n" if locked else "nvhost_podgov\n")
    _cpus(root, 4, 2601000 if locked else 972000, 2601000)
    _thermal(root, {"cpu-thermal": 52000, "gpu-thermal": 50500})
    _ina3221(root, "2-0040", "hwmon4", {1: ("VDD_GPU", 5000, 3000), 2: ("VDD_CPU_SOC_MSS", 5000, 1500),
                                        3: ("NC", 0, 0), 7: ("sum of shunt voltages", 5000, 4500)})
    _put(root, "sys/bus/i2c/devices/2-0044/name", "ina238\n")
    hw = "sys/bus/i2c/devices/2-0044/hwmon/hwmon5"
    _put(root, f"{hw}/in1_input", "19500\n")  # mV
    _put(root, f"{hw}/curr1_input", "2474\n")  # mA
    _put(root, f"{hw}/power1_input", "48243000\n")  # µW
    return root


def test_conditions_of_an_orin_on_jetpack_6_with_locked_clocks(tmp_path: Path) -> None:
    info = conditions(fake_orin(tmp_path, locked=True))
    assert info is not None
    assert info["l4t"] == "36.4.3" and info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["nvpmodel_mode"] == 0 and info["nvpmodel_name"] == "MAXN"
    assert info["clocks_locked"] is True and info["locked"] == {"gpu": True, "cpu": True, "emc": True}
    assert info["gpu_freq_hz"] == 1_300_500_000 and info["emc_freq_hz"] == 3_199_000_000
    assert info["temperatures_c"] == {"cpu-thermal": 47.5, "gpu-thermal": 45.25, "tj-thermal": 48.0}, "offline zone out"
    # mV x mA / 1000 per connected rail; no NC rail, no channel 7 (the sum of the shunt voltages)
    assert info["power_mw"] == {"VDD_GPU_SOC": 6000.0, "VDD_CPU_CV": 2000.0, "VIN_SYS_5V0": 5000.0,
                                "VDDQ_VDD2_1V8AO": 800.0}
    assert info["warnings"] == []


def test_unlocked_clocks_are_warned_about(tmp_path: Path) -> None:
    info = conditions(fake_orin(tmp_path, locked=False))
    assert info is not None and info["clocks_locked"] is False
    assert info["locked"] == {"gpu": False, "cpu": False, "emc": True}
    assert "jetson_clocks" in info["warnings"][0] and "GPU, CPU" in info["warnings"][0]


def test_cpu_cores_alone_unlocked_mean_clocks_not_locked(tmp_path: Path) -> None:
    root = fake_orin(tmp_path, locked=True)
    _put(root, "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq", "729600\n")
    info = conditions(root)
    assert info is not None and info["clocks_locked"] is False and info["locked"]["cpu"] is False


def test_an_orin_on_jetpack_7_2_in_a_container(tmp_path: Path) -> None:
    """No /etc/nv_tegra_release (NVIDIA's l4t images lack it): the nvidia-l4t-core package says the
    release; no nvpmodel status file: `nvpmodel -q` says the mode; no debugfs for a user: no EMC,
    and the clocks are judged on the CPU and GPU alone."""
    root = fake_orin(tmp_path, locked=True, jetpack=7)
    info = conditions(root)
    assert info is not None
    assert info["l4t"] == "39.2.0" and info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["nvpmodel_mode"] == 2 and info["nvpmodel_name"] == "MODE_30W"
    assert "emc_freq_hz" not in info and info["locked"] == {"gpu": True, "cpu": True}
    assert info["clocks_locked"] is True and info["power_mw"]["VDD_GPU_SOC"] == 6000.0


def test_a_device_tree_alone_is_a_jetson(tmp_path: Path) -> None:
    _put(tmp_path, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit\x00")
    assert is_jetson(tmp_path)
    info = conditions(tmp_path)
    assert info is not None and info["l4t"] is None and info["model"].startswith("NVIDIA Jetson Orin Nano")
    assert "clocks_locked" not in info and info["power_mw"] == {}


def test_conditions_of_a_thor(tmp_path: Path) -> None:
    info = conditions(fake_thor(tmp_path, locked=True))
    assert info is not None
    assert info["l4t"] == "38.2.0" and info["model"] == "NVIDIA Jetson AGX Thor Developer Kit"
    assert info["nvpmodel_mode"] == 0 and info["nvpmodel_name"] == "MAXN"
    assert info["gpu_freq_hz"] == 1_575_000_000, "the GPC domain, not the video decoder's gpu-nvd-0"
    assert info["emc_freq_hz"] == 4_266_000_000 and info["emc_max_freq_hz"] == 4_266_000_000, "bwmgr devfreq"
    assert info["clocks_locked"] is True
    # INA238 power1_input is µW: 48 243 000 µW = 48 243 mW, named VIN as jtop names it
    assert info["power_mw"] == {"VDD_GPU": 15000.0, "VDD_CPU_SOC_MSS": 7500.0, "VIN": 48243.0}


def test_a_thor_with_emc_under_dvfs_is_not_locked(tmp_path: Path) -> None:
    info = conditions(fake_thor(tmp_path, locked=False))
    assert info is not None and info["clocks_locked"] is False
    assert info["emc_freq_hz"] == 2_133_000_000 and info["locked"]["emc"] is False


def test_ina238_without_a_power_node_is_volts_times_amps(tmp_path: Path) -> None:
    root = fake_thor(tmp_path, locked=True)
    os.remove(root / "sys/bus/i2c/devices/2-0044/hwmon/hwmon5/power1_input")
    info = conditions(root)
    assert info is not None and info["power_mw"]["VIN"] == pytest.approx(19500 * 2474 / 1000)


def test_not_a_jetson(tmp_path: Path) -> None:
    _put(tmp_path, "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    assert conditions(tmp_path) is None
    with Sampler(tmp_path) as s:
        pass
    assert s.summary() is None


@pytest.mark.parametrize("board", [fake_orin, fake_thor])
def test_sampler_sees_power_and_a_clock_drop_under_locked_clocks(tmp_path: Path, board) -> None:
    root = board(tmp_path, locked=True)
    gpu = root / ("sys/class/devfreq/17000000.gpu" if board is fake_orin else "sys/class/devfreq/gpu-gpc-0")
    rail, hw = ("VDD_GPU_SOC", "1-0040/hwmon/hwmon3") if board is fake_orin else ("VDD_GPU", "2-0040/hwmon/hwmon4")
    locked_hz = int((gpu / "max_freq").read_text())
    base = float(conditions(root)["power_mw"][rail])  # type: ignore[index]
    with Sampler(root, period=0.01) as s:
        time.sleep(0.05)
        (gpu / "cur_freq").write_text("918000000\n")  # throttled below the locked clock
        ma = int((root / f"sys/bus/i2c/devices/{hw}/curr1_input").read_text())
        (root / f"sys/bus/i2c/devices/{hw}/curr1_input").write_text(f"{2 * ma}\n")
        time.sleep(0.05)
    summary = s.summary()
    assert summary is not None and summary["samples"] >= 4
    assert summary["clocks_locked"] is True and summary["throttled"] is True
    assert summary["gpu_freq_hz"] == {"min": 918_000_000, "max": locked_hz}
    assert summary["power_mw"][rail]["max"] == 2 * base
    assert base < summary["power_mw"][rail]["mean"] < 2 * base
    assert "NC" not in summary["power_mw"]


def test_a_lower_clock_under_dvfs_is_not_throttling(tmp_path: Path) -> None:
    root = fake_orin(tmp_path, locked=False)
    with Sampler(root, period=0.01) as s:
        time.sleep(0.03)
        (root / "sys/class/devfreq/17000000.gpu/cur_freq").write_text("306000000\n")
        time.sleep(0.03)
    summary = s.summary()
    assert summary is not None and summary["clocks_locked"] is False and summary["throttled"] is None
    assert summary["gpu_freq_hz"]["min"] == 306_000_000


def test_locked_clocks_that_hold_are_not_throttled(tmp_path: Path) -> None:
    with Sampler(fake_thor(tmp_path, locked=True), period=0.01) as s:
        time.sleep(0.03)
    summary = s.summary()
    assert summary is not None and summary["throttled"] is False
