"""``python -m resdeploy.measure._bench_worker``: one artifact benchmarked in a clean process."""

if __name__ == "__main__":
    from .bench import worker_main

    raise SystemExit(worker_main())
