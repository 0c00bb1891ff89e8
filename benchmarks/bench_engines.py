"""The Beam steps on each Beam engine, side by side in one run.

    .venv/bin/python benchmarks/bench_engines.py [--engines in-process portable flink spark]
                                                 [--pipeline-root DIR] [--json FILE]

For each engine, in one process run after another:
- ExampleGen and StatisticsGen on the full shipped MNIST (`run_local.py --to statistics_gen`
  into a fresh pipeline root, as bench_data_steps.py does): processing seconds and examples/s,
  start-up (Beam pipeline construction, job submission, the job server's start) apart;
- the Evaluator's executor on the full test split of those examples with the model of
  `--pipeline-root` (bench_evaluator.py's model: made by a short training run when missing):
  its wall, examples/s, and its TFMA seconds.
Engines: `in-process` (FnApiRunner, the default), `portable` (Beam's local job service through
PortableRunner, LOOPBACK), `flink` (FlinkRunner, `--flink_master=[local]`) and `spark`
(SparkRunner, `--spark_master_url=local[2]`). Flink and Spark need their job-server jar from
`scripts/ensure_job_server.sh`; where it cannot be had, the engine's row says why.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common
from bench_data_steps import one_run
from bench_evaluator import find_or_make_model

from pipeline.core import beam_engines

SCRIPT = common.PROJECT_ROOT / "scripts" / "ensure_job_server.sh"
ENGINES = ("in-process", "portable", "flink", "spark")


def engine_args(engine: str, endpoint: str) -> tuple:
    """(Beam options selecting `engine`, None) or (None, why the engine is not available)."""
    if engine == "in-process":
        return [], None
    if engine == "portable":
        return ["--runner=PortableRunner", f"--job_endpoint={endpoint}", "--environment_type=LOOPBACK"], None
    fetched = subprocess.run(
        [str(SCRIPT), engine], capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable)
    )
    if fetched.returncode != 0:
        return None, (fetched.stderr.strip().splitlines() or ["job server not available"])[-1]
    jar = fetched.stdout.strip().splitlines()[-1]
    if engine == "flink":
        return ["--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={jar}"], None
    return ["--runner=SparkRunner", "--spark_master_url=local[2]", f"--spark_job_server_jar={jar}"], None


def evaluate(work: str, examples: str, model: str, digest: str, beam_args: list) -> dict:
    """The evaluator's executor on the test split of `examples` under `beam_args`: wall seconds,
    examples evaluated and TFMA seconds."""
    from components.evaluator import executor
    from pipeline.config import EvaluatorConfig
    from pipeline.core.step import Artifact, StepContext

    shutil.rmtree(work, ignore_errors=True)
    outputs = {"evaluation": os.path.join(work, "evaluation"), "blessing": os.path.join(work, "blessing")}
    for path in outputs.values():
        os.makedirs(path)
    ctx = StepContext(
        step_name="evaluator",
        run_id="bench",
        pipeline_root=work,
        inputs={
            "examples": Artifact(examples, "Examples", {}, 1),
            "model": Artifact(model, "Model", {"digest": digest}, 2),
        },
        outputs=outputs,
        params=EvaluatorConfig(),
        beam_args=tuple(beam_args),
        log=logging.getLogger("bench_engines"),
    )
    started = time.perf_counter()
    props = executor.run(ctx).execution_properties
    wall = time.perf_counter() - started
    return {
        "wall_seconds": round(wall, 2),
        "examples": props["examples_evaluated"],
        "examples_per_second": round(props["examples_evaluated"] / wall, 0),
        "tfma_seconds": props["tfma_seconds"],
        "beam_runner": props["beam_runner"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument(
        "--pipeline-root",
        default=str(common.PROJECT_ROOT / "benchmarks" / "work" / "pipeline"),
        help="where the evaluator's model comes from (see bench_evaluator.py)",
    )
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/engines.json")
    args = parser.parse_args()
    from pipeline.logs import install_tensorflow_teardown_filter

    install_tensorflow_teardown_filter()  # the evaluator's models are freed at exit: no tracebacks
    _, model, digest = find_or_make_model(args.pipeline_root)
    service, endpoint = beam_engines.start_local_job_service() if "portable" in args.engines else (None, "")
    work = tempfile.mkdtemp(prefix="bench_engines_")
    results, rows = {}, []
    try:
        for engine in args.engines:
            beam_args, why = engine_args(engine, endpoint)
            if beam_args is None:
                results[engine] = {"available": False, "why": why}
                rows.append((engine, "not available: " + why, None, None, None, None, None))
                print(f"{engine}: not available: {why}", flush=True)
                continue
            print(f"{engine}: data steps...", flush=True)
            root = os.path.join(work, engine, "root")
            data = one_run(root, beam_args)
            print(f"{engine}: evaluator...", flush=True)
            examples = common.examples_uri(root)
            evaluation = evaluate(os.path.join(work, engine, "evaluator"), examples, model, digest, beam_args)
            results[engine] = {"available": True, "beam_args": beam_args, **data, "evaluator": evaluation}
            rows.append(
                (
                    engine,
                    data["example_gen"]["processing_seconds"],
                    data["example_gen"]["examples_per_second"],
                    data["example_gen"]["startup_seconds"],
                    data["statistics_gen"]["step_seconds"],
                    data["statistics_gen"]["examples_per_second"],
                    f"{evaluation['wall_seconds']} s, {evaluation['examples_per_second']:.0f}/s",
                )
            )
    finally:
        if service is not None:
            service.terminate()
            service.wait(20)
        shutil.rmtree(work, ignore_errors=True)

    common.print_table(
        "Beam engines (full MNIST data steps; evaluator on the full test split)",
        rows,
        ["engine", "ExampleGen s", "ex/s", "start-up s", "StatisticsGen s", "ex/s", "evaluator"],
    )
    common.write_json("engines", {"engines": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
