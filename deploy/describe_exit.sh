#!/bin/sh
# Prints the one line a person on call reads for an exit status of run_local.py.
# usage: describe_exit.sh STATUS [WHERE TO LOOK]
# Used by cron/run_logged.sh (cron mails the line) and systemd/mnist-pipeline-failed@.service
# (the line goes to the journal at priority err).
status=${1:?usage: describe_exit.sh STATUS [WHERE TO LOOK]}
case $status in
  0) what="completed" ;;
  1) what="failed (see its error line)" ;;
  2) what="refused its configuration (bad setting or data root)" ;;
  3) what="was stopped by the data gate (bad data, drift, or no complete span yet); nothing was pushed" ;;
  4) what="did not start: another run holds the pipeline lock" ;;
  141) what="lost the reader of its output (SIGPIPE); only the printed output was cut short" ;;
  130|143) what="was stopped (SIGINT 130, SIGTERM 143); the step it interrupted committed nothing, the next run resumes" ;;
  *) what="ended abnormally (killed, or a crash outside the pipeline)" ;;
esac
echo "mnist pipeline run $what: exit $status${2:+; $2}"
