"""The command line the e2e scripts share: a data command that writes a set
(ints after the folder), and `score DIR FILE`, which prints score(DIR, the
JSON in FILE) as JSON."""
from __future__ import annotations

import json
import sys


def run(doc: str, data: tuple[str, callable, int, int], score: callable) -> int:
    """data: (command, fn(dir, *ints), least and most ints after the folder)."""
    argv = sys.argv[1:]
    name, make, lo, hi = data
    if argv and argv[0] == name and lo <= len(argv) - 2 <= hi:
        make(argv[1], *map(int, argv[2:]))
        return 0
    if len(argv) == 3 and argv[0] == "score":
        with open(argv[2]) as f:
            print(json.dumps(score(argv[1], json.load(f))))
        return 0
    print(doc, file=sys.stderr)
    return 2
