"""A 3-4-2 MLP and a matching data set, small enough to compute pruning steps by hand."""
import torch
from torch import nn

from workers.data.dataset import Dataset

NAMES = ["l1.weight", "l2.weight"]   # the prunable weights: 12 + 8 = 20


class TinyMLP(nn.Module):
    output_layer = "l2"
    prune_output = True

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 4)
        self.l2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_data(n=32):
    x = torch.randn(n, 3, generator=gen(1))
    y = (x[:, 0] + x[:, 1] > 0).long()
    return Dataset("tiny", x, y, x[:8], y[:8], 2, (3,))
