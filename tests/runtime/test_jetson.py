"""Jetson bench conditions read from a fake sysfs tree laid out as JetPack 6 lays it out."""

from __future__ import annotations

import time
from pathlib import Path

from resdeploy.runtime.jetson import Sampler, conditions


def fake_orin(root: Path, *, locked: bool, gpu_hz: int = 1_300_500_000) -> Path:
    def put(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    put("etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    put("proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    put("var/lib/nvpmodel/status", "pmode:0000 fmode:quiet\n")
    put("etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=MODE_15W >\n")
    gpu = "sys/class/devfreq/17000000.gpu"
    put(f"{gpu}/cur_freq", f"{gpu_hz}\n")
    put(f"{gpu}/max_freq", "1300500000\n")
    put(f"{gpu}/min_freq", "1300500000\n" if locked else "306000000\n")
    put("sys/kernel/debug/bpmp/debug/clk/emc/rate", "3199000000\n")
    put("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    put("sys/class/thermal/thermal_zone0/temp", "47500\n")
    put("sys/class/thermal/thermal_zone1/type", "gpu-thermal\n")
    put("sys/class/thermal/thermal_zone1/temp", "45250\n")
    hw = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    put(f"{hw}/in1_label", "VDD_GPU_SOC\n")
    put(f"{hw}/in1_input", "5000\n")
    put(f"{hw}/curr1_input", "1200\n")
    put(f"{hw}/in2_label", "VDD_CPU_CV\n")
    put(f"{hw}/in2_input", "5000\n")
    put(f"{hw}/curr2_input", "400\n")
    return root


def test_conditions_of_an_orin_with_locked_clocks(tmp_path: Path) -> None:
    info = conditions(fake_orin(tmp_path, locked=True))
    assert info is not None
    assert info["l4t"] == "36.4.3" and info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["nvpmodel_mode"] == 0 and info["nvpmodel_name"] == "MAXN"
    assert info["clocks_locked"] is True and info["gpu_freq_hz"] == 1_300_500_000 and info["emc_freq_hz"] == 3_199_000_000
    assert info["temperatures_c"] == {"cpu-thermal": 47.5, "gpu-thermal": 45.25}
    assert info["power_mw"] == {"VDD_GPU_SOC": 6000.0, "VDD_CPU_CV": 2000.0}
    assert info["warnings"] == []


def test_unlocked_clocks_are_warned_about(tmp_path: Path) -> None:
    info = conditions(fake_orin(tmp_path, locked=False))
    assert info is not None and info["clocks_locked"] is False
    assert "jetson_clocks" in info["warnings"][0]


def test_not_a_jetson(tmp_path: Path) -> None:
    assert conditions(tmp_path) is None
    with Sampler(tmp_path) as s:
        pass
    assert s.summary() is None


def test_sampler_sees_power_and_a_clock_drop(tmp_path: Path) -> None:
    root = fake_orin(tmp_path, locked=True)
    with Sampler(root, period=0.01) as s:
        time.sleep(0.05)
        (root / "sys/class/devfreq/17000000.gpu/cur_freq").write_text("918000000\n")  # throttled
        (root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/curr1_input").write_text("2400\n")
        time.sleep(0.05)
    summary = s.summary()
    assert summary is not None and summary["samples"] >= 4
    assert summary["throttled"] is True and summary["gpu_freq_hz"] == {"min": 918_000_000, "max": 1_300_500_000}
    assert summary["power_mw"]["VDD_GPU_SOC"]["max"] == 12000.0
    assert 6000.0 < summary["power_mw"]["VDD_GPU_SOC"]["mean"] < 12000.0
    assert summary["max_temperature_c"]["gpu-thermal"] == 45.25
