"""A generated, deterministic NER task in two "languages" sharing entity
structure but not surface form: a stand-in for MetaXL's high-resource source
and low-resource target languages, which we cannot download here.

Sentences are built from abstract words: entities (PER, ORG, LOC, MISC; one
to three words, from per-type name lists), a trigger word that often precedes
an entity of a given type ("mr" before PER, "in" before LOC), and filler words
drawn from a Zipf distribution. Each language maps abstract words to token
ids of one shared vocabulary (as a multilingual model's vocabulary would):

* the target language renames most words (a different id for 80% of fillers
  and triggers, 50% of entity names: names are often shared across languages),
* and shifts the statistics: a flatter Zipf law for fillers, triggers used
  less often, longer sentences, more MISC entities.

Source: thousands of labelled sentences; target: ~100 for training, plus
held-out development and test sets for evaluation.
"""
import torch

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TYPES = ["PER", "ORG", "LOC", "MISC"]
PAD = 0


class Language:
    """The surface form and statistics of one language over abstract words."""

    def __init__(self, name, vocab_size, seed, rename=None, base=None, zipf=1.1,
                 trigger_prob=0.8, length=(8, 20), type_weights=(1, 1, 1, 1)):
        self.name, self.zipf, self.trigger_prob = name, zipf, trigger_prob
        self.length, self.type_weights = length, torch.tensor(type_weights, dtype=torch.float)
        g = torch.Generator().manual_seed(seed)
        if vocab_size < 128:
            raise ValueError(f"vocab_size must be >= 128, got {vocab_size}")
        # Abstract words use about 55% of the vocabulary: fillers, triggers, names.
        n_fill, n_names, n_trig = (vocab_size - 1) * 3 // 10, (vocab_size - 1) // 16, 4
        self.n_fill, self.n_trig_total = n_fill, n_trig * len(TYPES)
        n_abstract = n_fill + n_trig * len(TYPES) + n_names * len(TYPES)
        if base is None:
            ids = torch.randperm(vocab_size - 1, generator=g)[:n_abstract] + 1
        else:
            ids = base.ids.clone()
            # Renamed words get token ids the source never uses: new surface forms.
            unused = torch.ones(vocab_size, dtype=torch.bool)
            unused[0] = False
            unused[base.ids] = False
            pool = unused.nonzero().flatten()
            pool = pool[torch.randperm(len(pool), generator=g)]
            used = 0
            for lo, hi, frac in rename:  # rename a fraction of each abstract range
                pick = lo + torch.randperm(hi - lo, generator=g)[: int(frac * (hi - lo))]
                ids[pick] = pool[used:used + len(pick)]
                used += len(pick)
        self.ids = ids
        self.fill = (0, n_fill)
        self.trig = {t: (n_fill + i * n_trig, n_fill + (i + 1) * n_trig) for i, t in enumerate(TYPES)}
        start = n_fill + n_trig * len(TYPES)
        self.names = {t: (start + i * n_names, start + (i + 1) * n_names) for i, t in enumerate(TYPES)}
        ranks = torch.arange(1, n_fill + 1, dtype=torch.float)
        self.fill_p = ranks ** -zipf / (ranks ** -zipf).sum()

    def sentence(self, g):
        n = int(torch.randint(self.length[0], self.length[1] + 1, (1,), generator=g))
        words, tags = [], []
        while len(words) < n:
            if torch.rand(1, generator=g).item() < 0.25:
                t = TYPES[int(torch.multinomial(self.type_weights, 1, generator=g))]
                if torch.rand(1, generator=g).item() < self.trigger_prob:
                    lo, hi = self.trig[t]
                    words.append(int(torch.randint(lo, hi, (1,), generator=g)))
                    tags.append("O")
                span = int(torch.randint(1, 4, (1,), generator=g))
                lo, hi = self.names[t]
                for j in range(span):
                    words.append(int(torch.randint(lo, hi, (1,), generator=g)))
                    tags.append(("B-" if j == 0 else "I-") + t)
            else:
                words.append(int(torch.multinomial(self.fill_p, 1, generator=g)))
                tags.append("O")
        tokens = self.ids[torch.tensor(words)]
        return tokens, torch.tensor([TAGS.index(t) for t in tags])


def make_languages(vocab_size=2000, seed=0):
    """The source language and the target language derived from it."""
    source = Language("source", vocab_size, seed)
    n_fill, n_trig_total = source.n_fill, source.n_trig_total
    target = Language("target", vocab_size, seed + 1, base=source,
                      rename=[(0, n_fill, 0.5), (n_fill, n_fill + n_trig_total, 0.5),
                              (n_fill + n_trig_total, len(source.ids), 0.3)],
                      zipf=0.8, trigger_prob=0.5, length=(10, 26), type_weights=(1, 1, 1, 2))
    return source, target


def generate(language, n, seed, max_len=32):
    """n sentences as (tokens [n, max_len], tags [n, max_len], mask [n, max_len])."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((n, max_len), PAD, dtype=torch.long)
    tags = torch.zeros((n, max_len), dtype=torch.long)
    mask = torch.zeros((n, max_len), dtype=torch.bool)
    for i in range(n):
        t, y = language.sentence(g)
        t, y = t[:max_len], y[:max_len]
        tokens[i, :len(t)], tags[i, :len(y)], mask[i, :len(t)] = t, y, True
    return tokens, tags, mask


def make_task(vocab_size=2000, n_source=4000, n_target_train=100, n_target_dev=300,
              n_target_test=1000, seed=0, max_len=32):
    source, target = make_languages(vocab_size, seed)
    return {
        "source": generate(source, n_source, seed + 10, max_len),
        "target_train": generate(target, n_target_train, seed + 11, max_len),
        "target_dev": generate(target, n_target_dev, seed + 12, max_len),
        "target_test": generate(target, n_target_test, seed + 13, max_len),
    }
