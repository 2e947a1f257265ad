"""Side-by-side PyTorch training throughput of the two reference models in ../shared/REFERENCE.md.

REFERENCE.md's speeds were measured on one CPU; on another machine only a side-by-side run means
anything. This script times, on the current machine, the same two models in PyTorch (CPU, the
machine's cores as threads), so that seqlab's numbers from train_throughput.py / shakespeare.py
can be compared in the same session:

  * ``lstm``: Embedding 64, ``nn.LSTM`` 512 x2, Linear to the vocabulary, Adam 2e-3 with
    clipping at 5; batch 64, sequences of 100 (the "PyTorch 2.13 nn.LSTM" row).
  * ``gpt``: nanoGPT's model (pre-LayerNorm blocks without biases, GELU MLP of 4x width, fused
    causal attention, tied embeddings), AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on
    matrices, clipping at 1; the "baby" shape by default (4 layers, 4 heads, width 128, block
    64, batch 12), the larger one with ``--layers 6 --heads 6 --width 192 --context 128 --batch 32``.

It needs PyTorch, which seqlab does not depend on: run it from a separate environment, e.g.
``python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy``, then
``/tmp/torchvenv/bin/python benchmarks/torch_reference.py --model lstm``. Prints one JSON object
with the median step's training tokens/s (random tokens: throughput only, no quality).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class LSTMModel(nn.Module):
    def __init__(self, vocab: int, embed: int, units: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, units, layers, batch_first=True)
        self.head = nn.Linear(units, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.embed(x))
        return self.head(h)


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width, bias=False), nn.LayerNorm(width, bias=False)
        self.qkv, self.proj = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)
        self.fc, self.out = nn.Linear(width, 4 * width, bias=False), nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, layers: int, heads: int, width: int, context: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, x):
        h = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("lstm", "gpt"), required=True)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--width", type=int)
    ap.add_argument("--context", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.model == "lstm":
        layers, width, context, batch = args.layers or 2, args.width or 512, args.context or 100, args.batch or 64
        model = LSTMModel(args.vocab, 64, width, layers)
        opt, clip = torch.optim.Adam(model.parameters(), lr=2e-3), 5.0
    else:
        layers, width, context, batch = args.layers or 4, args.width or 128, args.context or 64, args.batch or 12
        model = GPT(args.vocab, layers, args.heads, width, context)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.99))
        clip = 1.0
    data = torch.randint(0, args.vocab, (args.steps + 5, batch, context + 1))
    times = []
    for i in range(args.steps + 5):
        t0 = time.perf_counter()
        x, y = data[i, :, :-1], data[i, :, 1:]
        loss = F.cross_entropy(model(x).reshape(-1, args.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if i >= 5:   # after warm-up
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({"framework": f"torch {torch.__version__}", "model": args.model, "threads": args.threads,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "shape": {"layers": layers, "width": width, "context": context, "batch": batch},
                      "median_step_seconds": round(median, 5),
                      "tokens_per_second": round(batch * context / median)}))


if __name__ == "__main__":
    main()
