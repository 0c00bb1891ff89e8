"""The trainer's progress log: step, loss, batch accuracy, throughput and the time left."""

import logging
import re
import time

import tensorflow as tf

from components.trainer.hooks import ProgressHook, format_duration, summary_tensor


class _SlowStep(tf.compat.v1.train.SessionRunHook):
    """Makes every step take a little wall time, so the time left is measurable."""

    def after_run(self, run_context, run_values):
        time.sleep(0.02)


def _graph():
    global_step = tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.losses.add_loss(tf.constant(0.75))
    tf.compat.v1.summary.scalar("train_batch_accuracy", tf.constant(0.25))
    return tf.compat.v1.assign_add(global_step, 1)


def test_progress_lines_show_loss_accuracy_rate_and_time_left(caplog):
    log = logging.getLogger("test.progress")
    hook = ProgressHook(batch_size=10, max_steps=6, every_steps=2, log=log)
    with tf.Graph().as_default():
        train_op = _graph()
        with caplog.at_level(logging.INFO, logger="test.progress"):
            with tf.compat.v1.train.MonitoredSession(hooks=[hook, _SlowStep()]) as session:
                for _ in range(6):
                    session.run(train_op)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert len(lines) == 3, lines
    for line, step in zip(lines[:2], (2, 4)):
        assert re.fullmatch(
            rf"train step {step}/6: loss 0\.7500, accuracy 0\.2500 "
            r"\(\d+ examples/s, ~\d+s left\)",
            line,
        ), line
    # No time left on the last step.
    assert re.fullmatch(r"train step 6/6: loss 0\.7500, accuracy 0\.2500 \(\d+ examples/s\)", lines[2]), (
        lines[2]
    )
    assert hook.seconds_left() == 0.0


def test_time_left_follows_the_wall_time_per_step():
    hook = ProgressHook(batch_size=1, max_steps=100, every_steps=1000, log=logging.getLogger("x"))
    assert hook.seconds_left() is None
    hook._clock_start = (time.perf_counter() - 2.0, 0)  # 2 s for the first 10 steps
    hook._step = 10
    assert 17.5 < hook.seconds_left() < 18.5


def test_hook_without_loss_or_accuracy_logs_the_step_only(caplog):
    log = logging.getLogger("test.bare")
    hook = ProgressHook(batch_size=10, max_steps=2, every_steps=1, log=log)
    with tf.Graph().as_default():
        train_op = tf.compat.v1.assign_add(tf.compat.v1.train.get_or_create_global_step(), 1)
        assert summary_tensor("train_batch_accuracy") is None
        with caplog.at_level(logging.INFO, logger="test.bare"):
            with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
                session.run(train_op)
                session.run(train_op)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.bare"]
    assert lines[0].startswith("train step 1/2") and "loss" not in lines[0]


def test_format_duration():
    assert [format_duration(s) for s in (0, 12.4, 75, 3725, -3)] == ["0s", "12s", "1m15s", "1h02m", "0s"]
