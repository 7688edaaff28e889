# Several files: the model and the data helpers live in their own modules.
from model import Classifier
from utils.data import batches

EPOCHS = 3  # passes over the data

clf = Classifier(threshold=0.0)
for epoch in range(1, EPOCHS + 1):
    seen = correct = 0
    for xs, ys in batches(epoch):
        clf.update(xs, ys)
        correct += sum(int(clf.predict(x) == y) for x, y in zip(xs, ys, strict=True))
        seen += len(xs)
    print(f"epoch {epoch} | loss: {1 - correct / seen:.4f} | val_acc: {clf.accuracy():.4f}")
