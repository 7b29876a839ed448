"""``python -m resdeploy.runtime._bench_worker``: one artifact benchmarked in a clean process."""

from .bench import _worker_main

raise SystemExit(_worker_main())
