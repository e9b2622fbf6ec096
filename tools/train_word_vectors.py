"""Train small word vectors offline (skip-gram with negative sampling, in PyTorch) and write them in the
word2vec/GloVe text format: the vector file the tests use was made with this script on the 20 Newsgroups
training text:

    python3 tools/train_word_vectors.py ../shared/datasets/20newsgroups-train.csv.xz \\
        tests/data/newsgroups-sgns-50d.txt.gz --dim 50 --words 5000 --epochs 1
"""

from __future__ import annotations

import argparse
import gzip
import re
import time
from collections import Counter

import numpy as np
import pandas as pd
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--words", type=int, default=5000, help="vocabulary written (most frequent)")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    texts = pd.read_csv(args.source)["text"].astype(str)
    pattern = re.compile(r"[\w']+")
    docs = [pattern.findall(t.lower()) for t in texts]
    counts = Counter(w for d in docs for w in d)
    vocab = [w for w, _ in counts.most_common(args.words)]
    index = {w: i for i, w in enumerate(vocab)}
    ids = [np.array([index[w] for w in d if w in index], dtype=np.int64) for d in docs]
    centers, contexts = [], []
    for seq in ids:
        for off in range(1, args.window + 1):
            if len(seq) > off:
                centers += [seq[:-off], seq[off:]]
                contexts += [seq[off:], seq[:-off]]
    center = torch.from_numpy(np.concatenate(centers))
    context = torch.from_numpy(np.concatenate(contexts))
    freq = torch.tensor([counts[w] for w in vocab], dtype=torch.float) ** 0.75
    emb_in = torch.nn.Embedding(len(vocab), args.dim)
    emb_out = torch.nn.Embedding(len(vocab), args.dim)
    torch.nn.init.uniform_(emb_in.weight, -0.5 / args.dim, 0.5 / args.dim)
    torch.nn.init.zeros_(emb_out.weight)
    opt = torch.optim.Adam(list(emb_in.parameters()) + list(emb_out.parameters()), lr=0.003)
    started = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(center))
        for start in range(0, len(order), 8192):
            b = order[start : start + 8192]
            c, o = emb_in(center[b]), emb_out(context[b])
            neg = emb_out(torch.multinomial(freq, len(b) * args.negatives, replacement=True).view(len(b), -1))
            pos_loss = torch.nn.functional.logsigmoid((c * o).sum(-1))
            neg_loss = torch.nn.functional.logsigmoid(-(neg @ c.unsqueeze(-1)).squeeze(-1)).sum(-1)
            loss = -(pos_loss + neg_loss).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, {len(center):,} pairs, {time.time() - started:.0f} s")
    vectors = emb_in.weight.detach().numpy()
    with gzip.open(args.out, "wt", encoding="utf-8") as f:
        f.write(f"{len(vocab)} {args.dim}\n")
        for w, v in zip(vocab, vectors, strict=True):
            f.write(w + " " + " ".join(f"{x:.4f}" for x in v) + "\n")


if __name__ == "__main__":
    main()
