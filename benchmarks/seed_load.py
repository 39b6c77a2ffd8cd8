"""Time the seed's way of loading text (seed_reference.py's load: a str, a Python list of ids,
then a long tensor) and print {"load_s": ...} like `chargpt-tui bench --steps 0 --gen-tokens 0`.

    python benchmarks/seed_load.py TEXT [PATH/TO/seed_reference.py]
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

text = sys.argv[1]
reference = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).parents[2] / "shared/bench/seed_reference.py")
spec = importlib.util.spec_from_file_location("seed_reference", reference)
seed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed)
start = time.perf_counter()
chars, train, val = seed.load(argparse.Namespace(text=text))
print(json.dumps({"impl": "seed_reference", "load_s": round(time.perf_counter() - start, 3),
                  "chars": len(train) + len(val), "vocab": len(chars)}))
