"""`make bench`: the benchmark harness is not written yet (tracked as its own issue)."""

import sys

print("bench: the benchmark harness is not written yet (see the benchmarks issue)",
      file=sys.stderr)
sys.exit(2)
