"""Unsupervised embedding mapping, MUSE-style (docs/embeddings.md): learn an orthogonal-ish W
that maps source-space vectors X onto a fixed target space Y, without a dictionary.

1. `adversarial_map`: a discriminator learns to tell mapped sources W·x from targets y; W learns to fool
   it (flipped labels), and after every step is pulled back towards orthogonality.
2. `refine`: alternate a CSLS-induced dictionary (`induce_dictionary`) and the closed-form `procrustes`.
3. Model selection without a dictionary: the mean cosine of the CSLS-induced source-to-target pairs among
   the most frequent sources (`criterion`); the best W of each phase is kept.

Y is never modified. Nearest neighbours are exact matrix products in chunks, so memory stays bounded for
vocabularies of 10^5 rows and no index library is needed. Rows are vectors: W maps x to W·x, i.e. the
mapped matrix is X @ W.T.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from xbench.errors import XbenchError

CHUNK = 4096


@dataclass(frozen=True)
class MappingSettings:
    """The discriminator, the adversarial schedule and the refinement; the defaults are the values TreLM's
    reference code runs with (docs/embeddings.md)."""

    dis_layers: int = 2
    dis_hidden: int = 2048
    dis_input_dropout: float = 0.1
    dis_steps: int = 5
    smoothing: float = 0.1
    lambda_dis: float = 1.0
    batch_size: int = 32
    epoch_size: int = 1_000_000
    epochs: int = 50
    lr: float = 0.1  # SGD, map and discriminator
    lr_decay: float = 0.98  # per epoch, map only
    lr_shrink: float = 0.5  # map lr x this when the criterion falls below its best
    min_lr: float = 1e-6  # stop once the map lr is below this
    beta: float = 0.001  # orthogonalisation step
    dis_most_frequent: int = 0  # the discriminator samples the n most frequent rows of each side; 0 = all
    refinements: int = 5
    csls_k: int = 10
    max_rank: int = 15_000  # refinement dictionary: the sources among the n most frequent
    criterion_rank: int = 10_000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        out = []
        for name in ("dis_layers", "dis_hidden", "dis_steps", "batch_size", "epoch_size", "epochs", "csls_k",
                     "max_rank", "criterion_rank"):
            if getattr(self, name) < 1:
                out.append(f"mapping {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.smoothing < 0.5:
            out.append(f"mapping smoothing must lie in [0, 0.5), got {self.smoothing}")
        if not 0 <= self.dis_input_dropout < 1:
            out.append(f"mapping dis_input_dropout must lie in [0, 1), got {self.dis_input_dropout}")
        if self.refinements < 0 or self.dis_most_frequent < 0:
            out.append("mapping refinements and dis_most_frequent must be >= 0")
        return out


def _tensor(M: Any, device: Any = None) -> Any:
    import torch

    t = torch.as_tensor(M, dtype=torch.float32)
    return t.to(device) if device is not None else t


def _normalised(M: Any) -> Any:
    return M / M.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _within(rows: Any, order: Sequence[int] | None, n: int, limit: int) -> Any:
    """A boolean mask over `rows`: which are among the first `limit` rows in frequency order."""
    import torch

    keep = torch.zeros(n, dtype=torch.bool, device=rows.device)
    keep[_order(order, n, limit, rows.device)] = True
    return keep[rows]


def _order(order: Sequence[int] | None, n: int, limit: int, device: Any) -> Any:
    """The first `limit` row indices in frequency order (row order when no order is given)."""
    import torch

    idx = torch.arange(n) if order is None else torch.as_tensor(list(order), dtype=torch.long)
    if order is not None and (len(idx) != n or sorted(idx.tolist()) != list(range(n))):
        raise XbenchError(f"a frequency order must be a permutation of the {n} rows")
    return idx[: min(limit, n)].to(device)


def mean_knn_cosine(queries: Any, keys: Any, k: int) -> Any:
    """For each (normalised) query row, the mean cosine with its k nearest (normalised) key rows."""
    import torch

    k = min(k, keys.shape[0])
    out = [(queries[s:s + CHUNK] @ keys.T).topk(k, dim=1).values.mean(dim=1) for s in range(0, len(queries), CHUNK)]
    return torch.cat(out) if out else queries.new_zeros(0)


def csls(WX: Any, Y: Any, k: int = 10, rows: Any = None) -> Any:
    """CSLS(Wx, y) = 2 cos(Wx, y) − r_Y(Wx) − r_X(y) for the mapped sources `rows` (all when None) against
    every target: r_Y(Wx) is the mean cosine of Wx with its k nearest targets, r_X(y) that of y with its k
    nearest mapped sources. A (len(rows) x len(Y)) matrix: ask for the rows you need."""
    A, B = _normalised(_tensor(WX)), _normalised(_tensor(Y, None if not hasattr(WX, "device") else WX.device))
    src = A if rows is None else A[rows]
    r_y = mean_knn_cosine(src, B, k)
    r_x = mean_knn_cosine(B, A, k)
    return 2 * src @ B.T - r_y[:, None] - r_x[None, :]


def _nearest(A: Any, B: Any, rows: Any, method: str, r_b: Any = None) -> tuple[Any, Any]:
    """For the (normalised) rows `rows` of A, the index of the nearest row of B and its cosine."""
    import torch

    best, cos = [], []
    k = _csls_k(method)
    r_a = mean_knn_cosine(B, A, k) if k and r_b is None else r_b
    for s in range(0, len(rows), CHUNK):
        q = A[rows[s:s + CHUNK]]
        sims = q @ B.T
        scores = sims if not k else 2 * sims - mean_knn_cosine(q, B, k)[:, None] - r_a[None, :]
        j = scores.argmax(dim=1)
        best.append(j)
        cos.append(sims.gather(1, j[:, None]).squeeze(1))
    return torch.cat(best), torch.cat(cos)


def _csls_k(method: str) -> int:
    if method == "nn":
        return 0
    if method.startswith("csls_knn_") and method[len("csls_knn_"):].isdigit():
        return int(method[len("csls_knn_"):])
    raise XbenchError(f"unknown dictionary method '{method}'; valid: nn, csls_knn_<k> (e.g. csls_knn_10)")


def induce_dictionary(WX: Any, Y: Any, method: str = "csls_knn_10", direction: str = "S2T", max_rank: int = 15_000,
                      src_order: Sequence[int] | None = None, tgt_order: Sequence[int] | None = None) -> Any:
    """Dictionary pairs (n x 2 LongTensor of [source row, target row]): with S2T each source among the
    `max_rank` most frequent is paired with its nearest target under `method` (CSLS by default); T2S the
    other way round; S2T&T2S keeps the pairs both directions agree on. As in MUSE (`dico_max_rank`), a pair
    is kept only when its other side is among the `max_rank` most frequent too: the neighbour search runs
    over every row, but a rare word is not let into the dictionary."""
    import torch

    A, B = _normalised(_tensor(WX)), _normalised(_tensor(Y, WX.device if hasattr(WX, "device") else None))
    if direction not in ("S2T", "T2S", "S2T&T2S"):
        raise XbenchError(f"unknown dictionary direction '{direction}'; valid: S2T, T2S, S2T&T2S")
    pairs = []
    if "S2T" in direction:
        rows = _order(src_order, len(A), max_rank, A.device)
        found = torch.stack([rows, _nearest(A, B, rows, method)[0]], dim=1)
        pairs.append(found[_within(found[:, 1], tgt_order, len(B), max_rank)])
    if "T2S" in direction:
        rows = _order(tgt_order, len(B), max_rank, B.device)
        found = torch.stack([_nearest(B, A, rows, method)[0], rows], dim=1)
        pairs.append(found[_within(found[:, 0], src_order, len(A), max_rank)])
    if len(pairs) == 1:
        return pairs[0]
    both = {tuple(p) for p in pairs[1].tolist()}
    kept = [p for p in pairs[0].tolist() if tuple(p) in both]
    return torch.tensor(kept, dtype=torch.long).reshape(-1, 2)


def procrustes(X_D: Any, Y_D: Any) -> Any:
    """The orthogonal W minimising ||X_D Wᵀ − Y_D||: W = U Vᵀ for U Σ Vᵀ = SVD(Y_Dᵀ X_D)."""
    import torch

    U, _, Vt = torch.linalg.svd(_tensor(Y_D).T @ _tensor(X_D, Y_D.device if hasattr(Y_D, "device") else None))
    return U @ Vt


def criterion(WX: Any, Y: Any, k: int = 10, rank: int = 10_000, src_order: Sequence[int] | None = None,
              tgt_order: Sequence[int] | None = None) -> float:
    """The unsupervised model-selection criterion: the mean cosine of the CSLS-induced source-to-target pairs
    among the `rank` most frequent sources (higher is better); as in MUSE, pairs whose target is not among
    the `rank` most frequent targets are left out, and -1e9 is returned when no pair is left."""
    A, B = _normalised(_tensor(WX)), _normalised(_tensor(Y, WX.device if hasattr(WX, "device") else None))
    rows = _order(src_order, len(A), rank, A.device)
    targets, cos = _nearest(A, B, rows, f"csls_knn_{k}")
    cos = cos[_within(targets, tgt_order, len(B), rank)]
    return float(cos.mean()) if len(cos) else -1e9


def _discriminator(d: int, s: MappingSettings) -> Any:
    from torch import nn

    layers: list[Any] = [nn.Dropout(s.dis_input_dropout)]
    width = d
    for _ in range(s.dis_layers):
        layers += [nn.Linear(width, s.dis_hidden), nn.LeakyReLU(0.2)]
        width = s.dis_hidden
    layers += [nn.Linear(width, 1), nn.Sigmoid()]
    return nn.Sequential(*layers)


def adversarial_map(X: Any, Y: Any, settings: MappingSettings, *, src_order: Sequence[int] | None = None,
                    tgt_order: Sequence[int] | None = None, device: Any = None,
                    log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """W (d x d, identity at the start) from adversarial training, the epoch with the best criterion kept,
    and a report of each epoch's criterion, losses and lr."""
    import torch
    from torch.nn.functional import binary_cross_entropy

    problems = settings.problems()
    X, Y = _tensor(X, device), _tensor(Y, device)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        problems.append(f"mapping needs two matrices of one width, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if problems:
        raise XbenchError("; ".join(problems))
    s, d = settings, X.shape[1]
    n_src = min(s.dis_most_frequent or len(X), len(X))
    n_tgt = min(s.dis_most_frequent or len(Y), len(Y))
    src_rows = _order(src_order, len(X), n_src, "cpu")
    tgt_rows = _order(tgt_order, len(Y), n_tgt, "cpu")
    cuda = [X.device.index if X.device.index is not None else torch.cuda.current_device()] \
        if X.device.type == "cuda" else []
    # Every random draw of the training (initialisation, batches, the discriminator's dropout) comes from the
    # seed, and the caller's global generators are left as they were.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(s.seed)
        dis = _discriminator(d, s).to(X.device)
        W = torch.nn.Parameter(torch.eye(d, device=X.device))
        gen = torch.Generator(device="cpu").manual_seed(s.seed)
        dis_opt = torch.optim.SGD(dis.parameters(), lr=s.lr)
        map_opt = torch.optim.SGD([W], lr=s.lr)
        labels = torch.cat([torch.full((s.batch_size,), 1 - s.smoothing), torch.full((s.batch_size,), s.smoothing)])
        labels = labels.to(X.device)[:, None]  # mapped sources 1 - s, targets s (MUSE's convention)

        def batch() -> tuple[Any, Any]:
            i = src_rows[torch.randint(0, n_src, (s.batch_size,), generator=gen)]
            j = tgt_rows[torch.randint(0, n_tgt, (s.batch_size,), generator=gen)]
            return X[i.to(X.device)], Y[j.to(Y.device)]

        best, best_W, history, shrink_armed = -float("inf"), W.detach().clone(), [], False
        for epoch in range(s.epochs):
            dis_losses, map_losses = [], []
            for _ in range(-(-s.epoch_size // s.batch_size)):  # as MUSE: range(0, epoch_size, batch_size)
                dis.train()
                for _ in range(s.dis_steps):
                    x, y = batch()
                    with torch.no_grad():
                        mapped = x @ W.T
                    loss = binary_cross_entropy(dis(torch.cat([mapped, y])), labels)
                    dis_opt.zero_grad()
                    loss.backward()
                    dis_opt.step()
                    dis_losses.append(float(loss.detach()))
                if s.lambda_dis > 0:
                    dis.eval()  # as MUSE: the map step sees the discriminator without its dropout
                    x, y = batch()
                    loss = s.lambda_dis * binary_cross_entropy(dis(torch.cat([x @ W.T, y])), 1 - labels)
                    map_opt.zero_grad()
                    loss.backward()
                    map_opt.step()
                    with torch.no_grad():  # W <- (1 + beta) W - beta (W Wᵀ) W: stay close to orthogonal
                        W.copy_((1 + s.beta) * W - s.beta * (W @ W.T) @ W)
                    map_losses.append(float(loss.detach()))
            with torch.no_grad():
                score = criterion(X @ W.T, Y, s.csls_k, s.criterion_rank, src_order, tgt_order)
            lr = map_opt.param_groups[0]["lr"]
            history.append({"epoch": epoch + 1, "criterion": round(score, 6), "lr": lr,
                            "dis_loss": round(sum(dis_losses) / len(dis_losses), 6),
                            "map_loss": round(sum(map_losses) / max(1, len(map_losses)), 6)})
            if log is not None:
                log(f"adversarial mapping epoch {epoch + 1}/{s.epochs}: criterion {score:.4f} lr {lr:.2e}")
            lr = max(s.min_lr, lr * s.lr_decay)
            if score > best:
                best, best_W = score, W.detach().clone()
            elif score < best:
                if shrink_armed:  # as MUSE: the lr shrinks from the second fall below the best on
                    lr *= s.lr_shrink
                shrink_armed = True
            map_opt.param_groups[0]["lr"] = lr
            if lr < s.min_lr:
                break
    return best_W, {"phase": "adversarial", "best_criterion": round(best, 6), "epochs": history}


def refine(W: Any, X: Any, Y: Any, settings: MappingSettings, *, src_order: Sequence[int] | None = None,
           tgt_order: Sequence[int] | None = None, device: Any = None,
           log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Procrustes refinement: `settings.refinements` rounds of a CSLS S2T dictionary among the `max_rank`
    most frequent sources (pairs with a rarer target left out, as in MUSE), then the closed-form map; the W
    with the best criterion (the input included)."""
    X, Y = _tensor(X, device), _tensor(Y, device)
    W = _tensor(W, X.device)
    s = settings
    best_W, best = W, criterion(X @ W.T, Y, s.csls_k, s.criterion_rank, src_order, tgt_order)
    history = [{"round": 0, "criterion": round(best, 6)}]
    for r in range(s.refinements):
        pairs = induce_dictionary(X @ W.T, Y, f"csls_knn_{s.csls_k}", "S2T", s.max_rank, src_order, tgt_order)
        W = procrustes(X[pairs[:, 0]], Y[pairs[:, 1]])
        score = criterion(X @ W.T, Y, s.csls_k, s.criterion_rank, src_order, tgt_order)
        history.append({"round": r + 1, "criterion": round(score, 6), "pairs": len(pairs)})
        if log is not None:
            log(f"refinement {r + 1}/{s.refinements}: criterion {score:.4f} ({len(pairs)} pairs)")
        if score > best:
            best, best_W = score, W
    return best_W, {"phase": "refinement", "best_criterion": round(best, 6), "rounds": history}


def map_embeddings(X: Any, Y: Any, settings: MappingSettings, *, src_order: Sequence[int] | None = None,
                   tgt_order: Sequence[int] | None = None, device: Any = None,
                   log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Adversarial training, then refinement: the final W and both phases' reports."""
    W, adv = adversarial_map(X, Y, settings, src_order=src_order, tgt_order=tgt_order, device=device, log=log)
    W, ref = refine(W, X, Y, settings, src_order=src_order, tgt_order=tgt_order, device=device, log=log)
    return W, {"settings": settings.to_dict(), "adversarial": adv, "refinement": ref}
