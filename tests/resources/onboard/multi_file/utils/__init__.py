def clip(v: float) -> float:
    return max(-1.0, min(1.0, v))
