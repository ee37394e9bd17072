"""Tutorial 3: the toolkit's stabilizers in your own plain torch training loop.

Minibatch SGD with a large constant step size on a noisy linear regression: the last iterate
jitters around the solution, an EMA of the iterates (``gvaempirics.stabilizers.EMA``) sits much
closer to it. Run: python docs/tutorials/stabilizers_in_your_loop.py
"""

import torch
from torch import nn

from gvaempirics.stabilizers import EMA
from gvatheory.schedules import PowerEMA

# --8<-- [start:loop]
torch.manual_seed(0)
d, n = 20, 4096
w_true = torch.randn(d, 1)
X = torch.randn(n, d)
y = X @ w_true + 0.5 * torch.randn(n, 1)  # noisy labels: minibatch gradients are noisy
X_test = torch.randn(2048, d)
y_test = X_test @ w_true  # noiseless: the test loss is the excess loss


def test_loss(model: nn.Module) -> float:
    with torch.no_grad():
        return nn.functional.mse_loss(model(X_test), y_test).item()


model = nn.Linear(d, 1, bias=False)
opt = torch.optim.SGD(model.parameters(), lr=0.1)  # large constant step: a high noise floor
ema = EMA(model, PowerEMA(alpha=0.7, gamma_min=1e-2, burn_in=100))  # gamma_t = max(t^-0.7, 0.01)

raw, averaged = [], []
for step in range(1000):
    idx = torch.randint(0, n, (8,))  # minibatch of 8
    loss = nn.functional.mse_loss(model(X[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    ema.update()  # after the optimizer step: absorb the new iterate
    if step >= 500:
        raw.append(test_loss(model))
        with ema.swap():  # inside the block the model holds the EMA weights
            averaged.append(test_loss(model))
# --8<-- [end:loop]

# --8<-- [start:result]
raw_mean, ema_mean = sum(raw) / len(raw), sum(averaged) / len(averaged)
print(f"test loss over the last 500 steps: last iterate {raw_mean:.4f}, EMA {ema_mean:.4f}")
print(f"EMA / last iterate: {ema_mean / raw_mean:.3f}")
assert ema_mean < 0.25 * raw_mean
# --8<-- [end:result]

# --8<-- [start:checkpoint]
# Checkpoint and resume: the stabilizer's state is a plain dict, saved next to the model's.
state = {"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict()}
resumed = nn.Linear(d, 1, bias=False)
resumed.load_state_dict(state["model"])
ema2 = EMA(resumed, PowerEMA(alpha=0.7, gamma_min=1e-2, burn_in=100))
ema2.load_state_dict(state["ema"])
assert ema2.count == ema.count == 1000
averaged_weights = ema2.averaged_parameters()  # name -> tensor, e.g. to save the averaged model
assert torch.equal(averaged_weights["weight"], ema.averaged_parameters()["weight"])
# --8<-- [end:checkpoint]
