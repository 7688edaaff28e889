"""Protected evaluation: test accuracy of the model that training saved.

Runs after training, in its own folder, on the artifact in
$AUTORESEARCH_ARTIFACT_DIR: ``model.pt``, a TorchScript module that maps raw
pixels (float32, shape [N, 64], values 0..16) to 10 logits.  TorchScript runs
the saved graph without importing the trial's Python code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from data import load_test


def main() -> int:
    artifact = Path(os.environ.get("AUTORESEARCH_ARTIFACT_DIR", ".")) / "model.pt"
    if not artifact.is_file():
        print(f"evaluate: no model.pt in {artifact.parent}; training must save one", file=sys.stderr)
        return 1
    model = torch.jit.load(str(artifact), map_location="cpu")
    model.eval()
    x_test, y_test = load_test()
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test))
    if logits.shape != (len(y_test), 10):
        print(f"evaluate: model returned shape {tuple(logits.shape)}, expected ({len(y_test)}, 10)", file=sys.stderr)
        return 1
    accuracy = (logits.argmax(1).numpy() == y_test).mean()
    print(f"accuracy: {accuracy:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
