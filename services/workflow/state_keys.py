"""Where a batch's data lives outside workflow history: state-store keys and child instance ids."""

STATE_TTL_S = 7 * 24 * 3600  # batch data left behind by a crash expires


def tasks_key(batch_id: str, index: int) -> str:
    return f"taskfan:{batch_id}:tasks:{index:05d}"


def results_key(batch_id: str, index: int) -> str:
    return f"taskfan:{batch_id}:results:{index:05d}"


def chunk_instance_id(batch_id: str, index: int) -> str:
    return f"{batch_id}:chunk-{index:05d}"
