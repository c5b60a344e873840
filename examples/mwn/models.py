"""The Meta-Weight-Net models: a CIFAR-style ResNet-32 classifier, two small
classifiers that memorise noisy labels quickly on a CPU (an MLP and a CNN),
and the weighting network (the hyperparameters lambda)."""
import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet32(nn.Module):
    """3 stages x 5 basic blocks with 16/32/64 channels times `width`
    (He et al. 2016, CIFAR variant), here on 1-channel images."""

    def __init__(self, num_classes=10, width=1, in_channels=1, blocks_per_stage=5):
        super().__init__()
        c = [16 * width, 32 * width, 64 * width]
        self.conv = nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c[0])
        layers, cin = [], c[0]
        for stage, cout in enumerate(c):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.layers(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class MLP(nn.Module):
    """784-hidden-hidden-10 with ReLUs: no BatchNorm, enough capacity (0.67M
    parameters at 512) to memorise thousands of wrong labels in tens of epochs."""

    def __init__(self, num_classes=10, hidden=512, in_features=28 * 28):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-fc(256)-fc(10), no BatchNorm (0.85M parameters)."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(),
                                  nn.Linear(256, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


CLASSIFIERS = ("resnet32", "mlp", "cnn")


def classifier(name, width=1):
    """The classifier named by train.py's --model (width: ResNet-32's multiplier)."""
    if name == "resnet32":
        return ResNet32(width=width)
    if name == "mlp":
        return MLP()
    if name == "cnn":
        return SmallCNN()
    raise ValueError(f"unknown model {name!r}; choose from {CLASSIFIERS}")


class WeightingNet(nn.Module):
    """MWN's V(loss; lambda): Linear(1, hidden), ReLU, Linear(hidden, 1), sigmoid.
    hidden=100 gives 301 hyperparameters."""

    def __init__(self, hidden=100):
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, loss):
        return torch.sigmoid(self.fc2(F.relu(self.fc1(loss))))


def count(module):
    return sum(p.numel() for p in module.parameters())
