from utils import clip


class Classifier:
    """A one-dimensional perceptron."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, x: float) -> int:
        return int(x > self.threshold)

    def update(self, xs, ys) -> None:
        for x, y in zip(xs, ys, strict=True):
            if self.predict(x) != y:
                self.threshold = clip(self.threshold + (0.1 if y == 0 else -0.1))

    def accuracy(self) -> float:
        from utils.data import validation

        pairs = validation()
        return sum(int(self.predict(x) == y) for x, y in pairs) / len(pairs)
