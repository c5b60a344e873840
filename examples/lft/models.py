"""LFT's models: ResNet feature extractors with feature-wise transformation
(FT) layers, and the RelationNet metric learner.

FT layer (Tseng et al., ICLR 2020): per channel, in training mode and when
active, gamma = 1 + N(0,1) * softplus(theta_gamma), beta = N(0,1) *
softplus(theta_beta), out = gamma * x + beta. theta_gamma starts at 0.3 and
theta_beta at 0.5. FT layers follow the last BatchNorm of every block and the
shortcut BatchNorm where a block has one."""
import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]),
          34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


class FeatureWiseTransformation(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), 0.3))
        self.beta = nn.Parameter(torch.full((1, channels, 1, 1), 0.5))
        self.active = True

    def forward(self, x):
        if not (self.training and self.active):
            return x
        # drawn in float32 whatever the model's dtype: float32 and float64
        # runs from one RNG state see the same transformation
        draw = lambda t: torch.randn(t.shape, device=t.device).to(t.dtype)  # noqa: E731
        gamma = 1 + draw(self.gamma) * F.softplus(self.gamma)
        beta = draw(self.beta) * F.softplus(self.beta)
        return gamma * x + beta


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.ft = FeatureWiseTransformation(c)
        self.shortcut = None
        if stride != 1 or cin != c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c),
                                          FeatureWiseTransformation(c))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.ft(self.bn2(self.conv2(out)))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, 4 * c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * c)
        self.ft = FeatureWiseTransformation(4 * c)
        self.shortcut = None
        if stride != 1 or cin != 4 * c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, 4 * c, 1, stride, bias=False),
                                          nn.BatchNorm2d(4 * c), FeatureWiseTransformation(4 * c))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.ft(self.bn3(self.conv3(out)))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """Feature extractor returning the last feature map (RelationNet compares maps)."""

    def __init__(self, depth=10, in_channels=3):
        super().__init__()
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for stage, (n, c) in enumerate(zip(blocks, [64, 128, 256, 512])):
            for b in range(n):
                layers.append(block(cin, c, 2 if stage > 0 and b == 0 else 1))
                cin = c * block.expansion
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        return self.layers(self.stem(x))


class RelationModule(nn.Module):
    """Scores a (class prototype, query) pair of feature maps in [0, 1]."""

    def __init__(self, channels, hidden=8):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(nn.Conv2d(2 * c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pairs):
        h = F.adaptive_avg_pool2d(self.conv(pairs), 1).flatten(1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(h)))).flatten()


class RelationNet(nn.Module):
    """Episodic N-way K-shot classifier: class prototypes (mean support feature
    maps) are paired with each query; trained with MSE to one-hot."""

    def __init__(self, depth=10, in_channels=3):
        super().__init__()
        self.features = ResNet(depth, in_channels)
        self.relation = RelationModule(self.features.out_channels)

    def set_ft(self, active: bool):
        for m in self.modules():
            if isinstance(m, FeatureWiseTransformation):
                m.active = active

    def ft_parameters(self):
        return [p for m in self.modules() if isinstance(m, FeatureWiseTransformation) for p in m.parameters()]

    def model_parameters(self):
        ft = {id(p) for p in self.ft_parameters()}
        return [p for p in self.parameters() if id(p) not in ft]

    def scores(self, support, query, n_way):
        """support [n_way * k_shot, C, H, W] grouped by class; query [Q, C, H, W]."""
        feats = self.features(torch.cat([support, query]))
        s, q = feats[: len(support)], feats[len(support):]
        protos = s.reshape(n_way, -1, *s.shape[1:]).mean(1)
        pairs = torch.cat([protos.unsqueeze(0).expand(len(q), *protos.shape),
                           q.unsqueeze(1).expand(len(q), n_way, *q.shape[1:])], dim=2)
        return self.relation(pairs.flatten(0, 1)).reshape(len(q), n_way)

    def loss(self, support, query, query_labels, n_way):
        scores = self.scores(support, query, n_way)
        return F.mse_loss(scores, F.one_hot(query_labels, n_way).to(scores.dtype)), scores
