import torch

import sigprop
from sigprop.experiments import load_dataset
from sigprop.nn.models import mlp

data = load_dataset("digits", seed=0)
model = mlp(64, 128, 4, 10, "tanh", layer="masked", density=0.2, generator=0)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
with sigprop.watch(model, "runs/digits", every=10) as w:
    for _ in range(3):  # epochs
        for i in range(0, len(data.x_train), 64):
            x, y = data.x_train[i : i + 64], data.y_train[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step()
