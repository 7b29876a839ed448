"""A recording stand-in for the ``tensorrt`` module (no machine here can run TensorRT).

It implements only the calls resdeploy makes, with the names of the real API (checked
separately by mypy against tensorrt-stubs), models the differences between generations that
matter here (BuilderFlag.FP16/INT8 and STRONGLY_TYPED absent in 11, no IProgressMonitor in 8.x)
and records every call in ``calls`` so tests can assert what the builder was told.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any


def make_fake(version: str) -> types.ModuleType:
    major = int(version.split(".")[0])
    calls: list[tuple[Any, ...]] = []
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    m.calls = calls  # type: ignore[attr-defined]

    class _Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        Severity = _Severity

        def __init__(self) -> None:
            pass

    flag_names = ["TF32", "GPU_FALLBACK"] + (["FP16", "INT8"] if major < 11 else [])
    BuilderFlag = enum.IntEnum("BuilderFlag", flag_names)
    creation = ["EXPLICIT_BATCH"] + (["STRONGLY_TYPED"] if major == 10 else [])
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation, start=0)
    MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"])
    DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class Profile:
        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            calls.append(("profile.set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

    class Config:
        def __init__(self) -> None:
            self.flags = {BuilderFlag.TF32}  # TF32 is on by default, as in TensorRT
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self.cache: TimingCache | None = None

        def set_flag(self, flag: Any) -> None:
            calls.append(("config.set_flag", flag.name))
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            calls.append(("config.clear_flag", flag.name))
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("config.set_memory_pool_limit", pool.name, size))

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.append(("config.create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("config.add_optimization_profile",))
            return 0

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags

    class Builder:
        def __init__(self, logger: Any) -> None:
            assert isinstance(logger, ILogger)

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("builder.create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            state = {
                "network_flags": network.flags,
                "flags": sorted(f.name for f in config.flags),
                "device": config.default_device_type.name,
                "dla_core": config.DLA_core,
                "monitor": getattr(config, "progress_monitor", None) is not None,
            }
            calls.append(("builder.build_serialized_network", state))
            return b"FAKEPLAN" + json.dumps(state, sort_keys=True).encode()

    class ParserError:
        def desc(self) -> str:
            return "Unsupported ONNX op"

    class OnnxParser:
        fail = False

        def __init__(self, network: Network, logger: Any) -> None:
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parser.parse_from_file", path))
            if OnnxParser.fail:
                self.num_errors = 1
                return False
            return True

        def get_error(self, i: int) -> ParserError:
            return ParserError()

    class Dims(tuple):
        pass

    for name, obj in dict(
        Dims=Dims, ILogger=ILogger, BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        MemoryPoolType=MemoryPoolType, DeviceType=DeviceType, Builder=Builder, OnnxParser=OnnxParser,
    ).items():
        setattr(m, name, obj)
    if major >= 10:

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        m.IProgressMonitor = IProgressMonitor  # type: ignore[attr-defined]
    return m
