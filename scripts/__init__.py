"""Developer scripts: `make run` / `make demo` (supervise.py)."""
