"""PyTorch reference implementations of tfllm's two benchmark recipes (benchmarks only).

Written here so that every tfllm speed figure can be a ratio measured on one
machine, in one run, against a faithful PyTorch baseline (issue 19):

* `GPT`: nanoGPT's character model as the `nanogpt-cpu` preset sets it up
  (model.py of karpathy/nanoGPT, rewritten): token + learned position
  embeddings, pre-norm blocks whose linear layers have no biases (one fused
  query/key/value projection, `F.scaled_dot_product_attention(is_causal=True)`), exact GELU,
  final layer norm, output tied to the token embedding. The layer norms keep
  their offsets, as tfllm's (Keras') do, so both train the same parameters. Trained as nanoGPT's
  train.py does: AdamW (betas 0.9/0.99, weight decay 0.1 on matrices and
  embeddings only), global gradient-norm clipping at 1.0, linear warm-up then
  cosine decay to `min_lr`, batches of 12 random 64-character windows, eager
  mode (nanoGPT's CPU recipe runs with `--compile=False`).
* `Classifier`: the article's model as tfllm's `article` preset builds it:
  learned token + position embeddings (128), 2 post-norm encoder blocks
  (8 heads, feed-forward 512 with ReLU, biases, dropout 0.1, layer-norm
  epsilon 1e-5: KerasHub's `TransformerEncoder`), masked mean pooling,
  dropout, one sigmoid unit; Adam 1e-3 (epsilon 1e-7, as Keras), batch 32.

Needs `pip install -e ".[bench]"` (torch 2.13 CPU). tfllm never imports this.

Command lines (the reference's whole commands, timed by bench_vs_torch.py):

    python benchmarks/torch_reference.py train --out-dir /tmp/ref --steps 2000
    python benchmarks/torch_reference.py sample --out-dir /tmp/ref --prompt "ROMEO:" --max-new-tokens 900

`train` prints a JSON line with its phases (import, data, steps, eval, save);
`sample` is nanoGPT's sample.py: load the checkpoint, then crop-to-the-window
decoding without a key/value cache, top-k 200, temperature 0.8.
"""

import time

_T0 = time.perf_counter()
import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ModuleNotFoundError as missing:  # torch is the bench extra, not a tfllm dependency
    if __name__ == "__main__" and any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        print("(PyTorch is not installed here, so only this text: pip install -e \".[bench]\")")
        sys.exit(0)
    raise SystemExit(f'benchmarks/torch_reference.py needs PyTorch ({missing}): pip install -e ".[bench]"') from None

IMPORT_SECONDS = time.perf_counter() - _T0

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "tfllm", "datasets", "data", "shakespeare.txt.gz")
SPECIALS = 5  # tfllm's id layout: [PAD] [UNK] [BOS] [EOS] [MASK], then the characters in sorted order

GPT_CONFIG = dict(vocab_size=None, block_size=64, n_layer=4, n_head=4, n_embd=128, intermediate=512)
GPT_TRAIN = dict(batch_size=12, steps=2000, learning_rate=1e-3, min_lr=1e-4, warmup=100, beta1=0.9, beta2=0.99,
                 weight_decay=0.1, grad_clip=1.0, eps=1e-8, eval_interval=250, eval_windows=240)


# --- the character GPT (nanoGPT) -------------------------------------------------------


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias.

    On, as tfllm's blocks have it: Keras' LayerNormalization keeps its offset, so with
    bias=True both sides train exactly the same parameters (nanoGPT's bias=False drops
    it; the linear layers here have no biases, as there)."""

    def __init__(self, ndim, bias=True, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Block(nn.Module):
    def __init__(self, n_embd, n_head, intermediate):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.attn_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.ln_2 = LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, intermediate, bias=False)
        self.mlp_proj = nn.Linear(intermediate, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, intermediate=512):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head, intermediate) for _ in range(n_layer)])
        self.ln_f = LayerNorm(n_embd)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output embedding
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def configure_optimizer(self, t=GPT_TRAIN):
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=t["learning_rate"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=0.8, top_k=200, banned=SPECIALS - 2):
        """nanoGPT's sampler: crop to the window, no cache; ids below `banned` never drawn (as tfllm)."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            logits = logits[:, -1, :] / temperature
            logits[:, :banned] = -float("inf")
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx = torch.cat((idx, torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)), dim=1)
        return idx


def learning_rate(step, t=GPT_TRAIN, steps=None):
    """Linear warm-up from 0, then cosine to min_lr (the schedule tfllm's preset uses)."""
    steps = steps or t["steps"]
    if step < t["warmup"]:
        return t["learning_rate"] * step / t["warmup"]
    progress = min((step - t["warmup"]) / max(steps - t["warmup"], 1), 1.0)
    alpha = t["min_lr"] / t["learning_rate"]
    return t["learning_rate"] * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)


def make_gpt_step(model, optimizer, t=GPT_TRAIN, steps=None):
    """One nanoGPT training step on `(x, y)` int64 tensors; returns the loss tensor."""
    state = {"step": 0}

    def step(x, y):
        lr = learning_rate(state["step"], t, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        return loss

    return step


def load_shakespeare():
    """(train_text, val_text): the bundled corpus split 90/10 as tfllm splits it."""
    with gzip.open(SHAKESPEARE, "rt", encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def char_vocabulary(train_text):
    """Character -> id with tfllm's layout (5 specials, then sorted characters)."""
    return {c: i + SPECIALS for i, c in enumerate(sorted(set(train_text)))}


def encode(text, stoi):
    return np.array([stoi.get(c, 1) for c in text], dtype=np.int64)


@torch.no_grad()
def window_loss(model, ids, block, batch_size=64, max_windows=None):
    """Mean loss over consecutive non-overlapping windows (tfllm's sequential_window_dataset)."""
    model.eval()
    starts = np.arange(0, len(ids) - block, block)  # every window of block + 1 ids that fits
    if max_windows and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
    windows = torch.from_numpy(ids[starts[:, None] + np.arange(block + 1)[None, :]])
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i: i + batch_size]
        _, loss = model(w[:, :-1], w[:, 1:])
        total += float(loss) * len(w)
        count += len(w)
    model.train()
    return total / count


def cmd_train(args):
    phases = {"import": IMPORT_SECONDS}
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    train_text, val_text = load_shakespeare()
    stoi = char_vocabulary(train_text)
    train_ids, val_ids = encode(train_text, stoi), encode(val_text, stoi)
    phases["data"] = time.perf_counter() - t
    t = time.perf_counter()
    config = dict(GPT_CONFIG, vocab_size=len(stoi) + SPECIALS)
    model = GPT(**config)
    optimizer = model.configure_optimizer()
    step = make_gpt_step(model, optimizer, steps=args.steps)
    phases["build"] = time.perf_counter() - t
    block, batch = config["block_size"], GPT_TRAIN["batch_size"]
    phases["steps"] = phases["eval"] = 0.0
    step_times = []
    history = []
    for i in range(args.steps):
        starts = rng.integers(0, len(train_ids) - block - 1, size=batch)
        w = torch.from_numpy(train_ids[starts[:, None] + np.arange(block + 1)[None, :]])
        t = time.perf_counter()
        loss = step(w[:, :-1], w[:, 1:])
        if (i + 1) % GPT_TRAIN["eval_interval"] == 0 or i + 1 == args.steps:
            loss.item()
        dt = time.perf_counter() - t
        step_times.append(dt)
        phases["steps"] += dt
        if (i + 1) % GPT_TRAIN["eval_interval"] == 0 or i + 1 == args.steps:
            t = time.perf_counter()
            history.append(window_loss(model, val_ids, block, max_windows=GPT_TRAIN["eval_windows"]))
            phases["eval"] += time.perf_counter() - t
    t = time.perf_counter()
    val_loss = window_loss(model, val_ids, block)
    phases["final_eval"] = time.perf_counter() - t
    t = time.perf_counter()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config,
                "vocabulary": sorted(stoi, key=stoi.get)}, os.path.join(args.out_dir, "ckpt.pt"))
    phases["save"] = time.perf_counter() - t
    result = {"val_loss": round(val_loss, 4), "eval_history": [round(v, 4) for v in history],
              "median_ms_per_step": round(float(np.median(step_times)) * 1000, 3),
              "phases_seconds": {k: round(v, 3) for k, v in phases.items()}}
    print(json.dumps(result))


def cmd_sample(args):
    t = time.perf_counter()
    checkpoint = torch.load(os.path.join(args.out_dir, "ckpt.pt"), map_location="cpu")
    model = GPT(**checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    stoi = {c: i + SPECIALS for i, c in enumerate(checkpoint["vocabulary"])}
    itos = {i: c for c, i in stoi.items()}
    load = time.perf_counter() - t
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    idx = torch.tensor([[stoi[c] for c in args.prompt]], dtype=torch.long)
    out = model.generate(idx, args.max_new_tokens, temperature=0.8, top_k=200)[0].tolist()
    print(args.prompt + "".join(itos.get(i, "") for i in out[len(args.prompt):]))
    print(json.dumps({"import": round(IMPORT_SECONDS, 3), "load": round(load, 3),
                      "generate": round(time.perf_counter() - t, 3)}), file=sys.stderr)


# --- the article's classifier ------------------------------------------------------------


class EncoderBlock(nn.Module):
    """KerasHub's TransformerEncoder (post-norm, biases, ReLU, dropout on probabilities and both branches)."""

    def __init__(self, d_model, num_heads, dff, dropout):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.attention_output = nn.Linear(d_model, d_model)
        self.attention_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.intermediate = nn.Linear(d_model, dff)
        self.output = nn.Linear(dff, d_model)
        self.feedforward_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout = dropout

    def forward(self, x, keep):
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        mask = keep[:, None, None, :]  # a padded key is never attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = self.attention_output(y.transpose(1, 2).reshape(B, T, C))
        x = self.attention_norm(x + F.dropout(y, self.dropout, self.training))
        y = self.output(F.relu(self.intermediate(x)))
        return self.feedforward_norm(x + F.dropout(y, self.dropout, self.training))


class Classifier(nn.Module):
    def __init__(self, vocab_size, sequence_length=100, d_model=128, num_layers=2, num_heads=8, dff=512, dropout=0.1):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(sequence_length, d_model)
        self.blocks = nn.ModuleList([EncoderBlock(d_model, num_heads, dff, dropout) for _ in range(num_layers)])
        self.dropout = dropout
        self.head = nn.Linear(d_model, 1)

    def forward(self, ids):
        keep = ids != 0
        x = self.token_embedding(ids) + self.position_embedding(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, keep)
        w = keep[..., None].to(x.dtype)
        x = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        return torch.sigmoid(self.head(F.dropout(x, self.dropout, self.training)))[:, 0]


def make_classifier_step(model, learning_rate=1e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-7)

    def step(ids, labels):
        p = model(ids).clamp(1e-7, 1 - 1e-7)  # Keras' binary cross-entropy clips the same way
        loss = F.binary_cross_entropy(p, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--steps", type=int, default=GPT_TRAIN["steps"])
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sample")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=900)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.set_defaults(func=cmd_sample)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
