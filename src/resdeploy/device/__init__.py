"""Carrying proof to the device and checking it there: the deploy bundle, ``verify`` (run,
compare, explain), and what the machine is (its environment; a Jetson's sysfs conditions are
read by :mod:`resdeploy.runtime.jetson`, which bench samples while timing)."""

from .bundle import BUNDLE_FORMAT, TOLERANCES, Bundle, BundleSource, BundleVariant, Tolerance, write_bundle
from .environment import environment
from .verify import VerifyReport, VerifyResult, verify

__all__ = [
    "BUNDLE_FORMAT",
    "TOLERANCES",
    "Bundle",
    "BundleSource",
    "BundleVariant",
    "Tolerance",
    "VerifyReport",
    "VerifyResult",
    "environment",
    "verify",
    "write_bundle",
]
