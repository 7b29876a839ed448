"""The whole pipeline in one command: ``resdeploy run``, its report, manifest and Triton repository."""

from .config import SETTINGS, RunConfig, load_config, run_config
from .report import summary_rows
from .run import RunResult, run_pipeline
from .triton import TritonModel, config_pbtxt, write_repository

__all__ = ["SETTINGS", "RunConfig", "RunResult", "TritonModel", "config_pbtxt", "load_config", "run_config", "run_pipeline", "summary_rows", "write_repository"]
