import random


def batches(epoch: int):
    rng = random.Random(epoch)
    for _ in range(4):
        xs = [rng.uniform(-1, 1) for _ in range(16)]
        yield xs, [int(x > 0.2) for x in xs]


def validation():
    rng = random.Random(99)
    xs = [rng.uniform(-1, 1) for _ in range(50)]
    return [(x, int(x > 0.2)) for x in xs]
