"""A transformer encoder for token classification, and MetaXL's
representation transformation network (RTN, the hyperparameters lambda)."""
import torch
from torch import nn

import evograd


class RTN(nn.Module):
    """Linear(d, d/2), ReLU, Linear(d/2, d + 1) on the detached hidden state;
    the last output is a sigmoid gate: h' = h + gate * delta. About 590k
    parameters at d = 768 (`rtn_parameter_count`)."""

    def __init__(self, d, detach=evograd.detached):
        super().__init__()
        self.d = d
        self.detach = detach  # Tensor.detach: the official code's own form
        self.fc1 = nn.Linear(d, d // 2)
        self.fc2 = nn.Linear(d // 2, d + 1)

    def forward(self, h):
        # detached at the current weights, as the official step feeds it
        # (evograd.detached: also inside a lookahead step's perturbed passes)
        out = self.fc2(torch.relu(self.fc1(self.detach(h))))
        return h + torch.sigmoid(out[..., -1:]) * out[..., :-1]


def rtn_parameter_count(d):
    return d * (d // 2) + d // 2 + (d // 2) * (d + 1) + (d + 1)


class Encoder(nn.Module):
    """Embeddings + learned positions + `layers` transformer layers + a tagger
    head. `forward(tokens, mask, rtn, rtn_rows)` applies the RTN after layer
    `rtn_layer` to the rows selected by the boolean `rtn_rows`."""

    def __init__(self, vocab_size=2000, d=64, heads=4, ffn=128, layers=2, num_tags=9,
                 max_len=64, dropout=0.1, rtn_layer=1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, ffn, dropout, batch_first=True) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, num_tags)
        self.rtn_layer = rtn_layer

    def forward(self, tokens, mask, rtn=None, rtn_rows=None):
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for i, layer in enumerate(self.layers):
            h = layer(h, src_key_padding_mask=~mask)
            if rtn is not None and i + 1 == self.rtn_layer:
                h = torch.where(rtn_rows[:, None, None], rtn(h), h)
        return self.classifier(self.norm(h))


def xlmr_base_like(vocab_size=30000):
    """The XLM-R base shape (12 layers, hidden 768, 12 heads, FFN 3072) with a
    smaller vocabulary: the benchmark's memory then reflects the encoder, not
    a 250k-row embedding."""
    return Encoder(vocab_size, 768, 12, 3072, 12, max_len=128, rtn_layer=6)
