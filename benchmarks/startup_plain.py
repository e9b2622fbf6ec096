"""The plain script that ``benchmarks.startup`` sets lstm-tune's first result against.

What a user writes by hand to get one number: start Python, import torch and pandas, read the Beijing CSV, fill its
gaps, scale it on the training rows, window it (24 hours of every numeric column before the hour forecast), train a
16-unit LSTM for one epoch on one thread, score the validation split, print the RMSE. It uses nothing of lstm-tune,
so its time is the floor any tool pays (interpreter, imports, data, one epoch).

    python3 -m benchmarks.startup_plain CSV [--train-windows N]
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = argv[0]
    limit = int(argv[argv.index("--train-windows") + 1]) if "--train-windows" in argv else None
    frame = pd.read_csv(path)
    numeric = frame.drop(columns=["No"], errors="ignore").select_dtypes("number").ffill().bfill()
    values = numeric.to_numpy(np.float32)
    target = numeric.columns.get_loc("pm2.5")
    n = len(values)
    cut_train, cut_val = int(0.7 * n), int(0.85 * n)
    mean, std = values[:cut_train].mean(0), values[:cut_train].std(0) + 1e-6
    scaled = torch.from_numpy((values - mean) / std)
    window = 24

    def windows(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        ends = torch.arange(max(start, window), stop)
        index = ends[:, None] - window + torch.arange(window)[None, :]
        return scaled[index], scaled[ends, target]

    x_train, y_train = windows(0, cut_train)
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_val, y_val = windows(cut_train, cut_val)

    class Model(torch.nn.Module):
        def __init__(self, inputs: int) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(inputs, 16, batch_first=True)
            self.head = torch.nn.Linear(16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.head(out[:, -1]).squeeze(-1)

    model = Model(scaled.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.randperm(len(x_train))
    for i in range(0, len(order), 256):
        batch = order[i : i + 256]
        loss = torch.nn.functional.mse_loss(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        rmse = float(torch.sqrt(torch.nn.functional.mse_loss(model(x_val), y_val))) * float(std[target])
    print(f"first result: val_rmse={rmse:.3f} at {time.time():.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
