"""File names of the ModelBlessing artifact (read by the pusher as well)."""

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
DECISION_FILE = "decision.json"
