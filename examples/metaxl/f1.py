"""Entity-level F1 with exact span match over BIO tags (CoNLL style: an I-
tag that does not continue an entity of its type starts a new one)."""
from typing import List, Sequence, Set, Tuple

Span = Tuple[int, int, int, str]  # (sentence, start, end exclusive, type)


def spans(tags: Sequence[str], sentence: int = 0) -> Set[Span]:
    out, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t and start is not None
        if start is not None and not continues:
            out.add((sentence, start, i, kind))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, t
    return out


def f1(gold: List[Sequence[str]], pred: List[Sequence[str]]):
    """(precision, recall, f1) over all sentences."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    g, p = set(), set()
    for i, (a, b) in enumerate(zip(gold, pred)):
        if len(a) != len(b):
            raise ValueError(f"sentence {i}: {len(a)} gold tags but {len(b)} predicted")
        g |= spans(a, i)
        p |= spans(b, i)
    tp = len(g & p)
    precision = tp / len(p) if p else 0.0
    recall = tp / len(g) if g else 0.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score
