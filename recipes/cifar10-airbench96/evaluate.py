"""Protected evaluation: CIFAR-10 test accuracy of the model that training saved.

Runs after training, in a fresh folder, on ``$AUTORESEARCH_ARTIFACT_DIR/model.pt``:
a TorchScript module mapping float images in [0, 1], shape [N, 3, H, W], to
[N, 10] logits (test-time augmentation, if any, lives inside it).  TorchScript
runs the saved graph without importing the trial's Python code, so the number
printed here cannot come from the trial.  Prints ``accuracy: <fraction>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import data
import torch

BATCH = 2000  # test images per forward pass


def main() -> int:
    tiny = "--tiny" in sys.argv
    artifact = Path(os.environ.get("AUTORESEARCH_ARTIFACT_DIR", ".")) / "model.pt"
    if not artifact.is_file():
        print(f"evaluate: no model.pt in {artifact.parent}; training must save one", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    torch.set_num_threads(1)
    model = torch.jit.load(str(artifact), map_location=device).eval()
    images, labels = data.load("test", tiny=tiny)
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels).to(device)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            logits = model(x[i : i + BATCH].float() / 255)
            if logits.shape != (min(BATCH, len(x) - i), 10):
                print(f"evaluate: model returned shape {tuple(logits.shape)}, expected (batch, 10)", file=sys.stderr)
                return 1
            correct += int((logits.argmax(1) == y[i : i + BATCH]).sum())
    print(f"accuracy: {correct / len(y):.6f}")
    print(f"test_images: {len(y)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
