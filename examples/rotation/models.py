"""LeNet-5 (two 5x5 convolutions with pooling, three fully connected
layers) for 28x28 grey images. Inputs are raw [0, 1] pixels, so rotation
pads with true black; the model normalises them itself."""
import torch
from torch import nn
from torch.nn import functional as F

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


class LeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)   # 28 -> 28, pool -> 14
        self.conv2 = nn.Conv2d(6, 16, 5)             # 14 -> 10, pool -> 5
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = (x - MEAN) / STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
