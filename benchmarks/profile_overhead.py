"""Where the Trainer's extra time per step goes, for the tiny net of ``overhead.py``: cProfile of the ``zoo`` arm
(Trainer.fit, logger/progress bar/checkpointing off), the top functions by own time, and by cumulative time for the
zoo's own code (the parts the zoo can change).

    python benchmarks/profile_overhead.py [--steps 400] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import overhead  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    reg, kwargs, batch, _ = overhead.NETS["tiny"]
    overhead.NETS["tiny"] = (reg, kwargs, batch, args.steps)
    overhead.with_trainer("tiny", False)  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    per_step, _ = overhead.with_trainer("tiny", False)
    profiler.disable()
    print(f"{1e3 * per_step:.2f} ms per step under the profiler\n")
    for title, sort, pattern in (("own time", "tottime", ""), ("cumulative, zoo code", "cumulative", "/work|zoo/")):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(sort)
        stats.print_stats(pattern or None, args.top) if pattern else stats.print_stats(args.top)
        print(f"--- {title} ---\n" + "\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    main()
