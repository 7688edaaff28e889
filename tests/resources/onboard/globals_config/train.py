# Configured by module-level globals, as many research scripts are; prints `name: value` lines.
import math

LEARNING_RATE = 0.3  # step size
STEPS = 40  # gradient steps
START = 4.0  # initial guess

w = START
for step in range(STEPS):
    grad = 2 * (w - 1.5)  # minimise (w - 1.5)^2
    w -= LEARNING_RATE * grad
    if step % 10 == 9:
        print(f"step: {step + 1}")
        print(f"train_loss: {(w - 1.5) ** 2 + 0.01:.6f}")
print(f"val_loss: {(w - 1.5) ** 2 + 0.02 + 0.001 * math.cos(w):.6f}")
