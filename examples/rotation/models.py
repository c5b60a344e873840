"""LeNet-5 (two 5x5 convolutions with pooling, three fully connected
layers) for 28x28 grey images. Inputs are raw [0, 1] pixels, so rotation
pads with true black; the model normalises them itself.

Two flavours: `classic` (tanh and average pooling, as LeCun et al. 1998,
smooth in the weights) and `relu` (ReLU and max pooling, the modern
default). The difference matters to EvoGrad: its hypergradient is a finite
difference over weight perturbations of size sigma, and every ReLU or
max-pool switch a perturbation causes moves d loss / d lambda by a step
that does not shrink with sigma; see sensitivity.py."""
from torch import nn
from torch.nn import functional as F

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
FLAVOURS = ("classic", "relu")


class LeNet(nn.Module):
    def __init__(self, num_classes=10, flavour="classic"):
        super().__init__()
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
        self.flavour = flavour
        self.act = torch_tanh if flavour == "classic" else F.relu
        self.pool = F.avg_pool2d if flavour == "classic" else F.max_pool2d
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)   # 28 -> 28, pool -> 14
        self.conv2 = nn.Conv2d(6, 16, 5)             # 14 -> 10, pool -> 5
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = (x - MEAN) / STD
        x = self.pool(self.act(self.conv1(x)), 2)
        x = self.pool(self.act(self.conv2(x)), 2)
        x = self.act(self.fc1(x.flatten(1)))
        x = self.act(self.fc2(x))
        return self.fc3(x)


def torch_tanh(x):
    return x.tanh()


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
