"""Benchmark tasktrail against raw SQLite and the eventsourcing library: `tasktrail bench`.

pip install -e '.[bench]'
python scripts/bench_store.py                # the full comparison, about a minute
python scripts/bench_store.py --scale 0.2    # a quick look
python scripts/bench_store.py --memory 1000000
"""

from eventstore.cli.bench import bench

if __name__ == "__main__":
    bench()
