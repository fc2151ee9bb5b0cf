"""Published checkpoints (placeholder until the checkpoint format lands)."""


def published() -> dict:
    return {}
