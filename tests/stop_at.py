"""A three-step fake pipeline that sends itself SIGTERM at a chosen point, for test_signals.py.

    python stop_at.py POINT ROOT [RUN_ID]     POINT: none | step | held | backup | stuck

step: inside the second step's executor, after it wrote part of its output; held: the same,
inside an `interrupts.held()` section (the stop waits for the next checkpoint), and a second
SIGTERM then, which is ignored; backup: inside
the store_written hook; stuck: inside a held section that never ends (the watchdog's case).
Prints the error line and exits as run_local.py does.
"""

import os
import signal
import sys
import time

from pipeline.core.errors import Interrupted
from pipeline.core.interrupts import held, stop_on_signals
from pipeline.core.pipeline import Pipeline
from pipeline.core.runner import run_pipeline
from pipeline.core.step import InputSpec, StepOutcome, StepSpec
from pipeline.metadata_settings import back_up_after_run

POINT = sys.argv[1]


def stop_here() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler raises before this ends (unless held)


def first(ctx):
    with open(os.path.join(ctx.outputs["numbers"], "numbers.txt"), "w") as f:
        f.write("1 2 3\n")
    return StepOutcome()


def second(ctx):
    with open(os.path.join(ctx.outputs["total"], "total.txt"), "w") as f:
        f.write("6")
        f.flush()
        if POINT == "step":
            stop_here()
        if POINT in ("held", "stuck"):
            with held():
                os.kill(os.getpid(), signal.SIGTERM)
                if POINT == "held":
                    # A second one while the first is pending: handled in this thread before
                    # the next line runs, so it surely comes while the run is stopping.
                    os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5 if POINT == "held" else 600)
    return StepOutcome()


def third(ctx):
    with open(os.path.join(ctx.outputs["report"], "report.txt"), "w") as f:
        f.write("ok\n")
    return StepOutcome()


def backup(store) -> None:
    if POINT == "backup":
        stop_here()
    back_up_after_run(store)


def main() -> int:
    steps = (
        StepSpec("example_gen", {}, {"numbers": "Numbers"}, first, {}),
        StepSpec(
            "statistics_gen",
            {"numbers": InputSpec(producer="example_gen.numbers")},
            {"total": "Total"},
            second,
            {},
        ),
        StepSpec(
            "example_validator",
            {"total": InputSpec(producer="statistics_gen.total")},
            {"report": "Report"},
            third,
            {},
        ),
    )
    pipeline = Pipeline(steps=steps, root=sys.argv[2], lock_timeout_s=1.0, store_written=backup)
    try:
        with stop_on_signals():
            return run_pipeline(pipeline, run_id=sys.argv[3] if len(sys.argv) > 3 else None).exit_code
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
