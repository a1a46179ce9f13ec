"""Elo ratings from game results: a Bradley-Terry model fitted by maximum likelihood, with
bootstrap confidence intervals.

P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)); a draw counts as half a win for each side.
Every pair of agents is also credited with ``prior_draws`` drawn games (a weak prior toward
equal strength): without it an agent that wins every game would have an infinite rating.
Ratings are shifted so that their mean is ``mean`` (1500): only differences have a meaning.
"""

from __future__ import annotations

import numpy as np

SCALE = 400.0 / np.log(10.0)  # Elo points per unit of the logistic's natural scale


def fit(score: np.ndarray, games: np.ndarray, prior_draws: float = 1.0, mean: float = 1500.0,
        iterations: int = 100) -> np.ndarray:
    """Ratings from ``score[..., i, j]`` (i's points against j) and ``games[..., i, j]``.

    Leading dimensions are batches (the bootstrap fits all its resamples at once). Damped
    Newton steps on the log-likelihood, which is concave; the mean rating is pinned.
    """
    score, games = np.asarray(score, float), np.asarray(games, float)
    k = score.shape[-1]
    off = 1.0 - np.eye(k)
    w = score + prior_draws / 2 * off
    n = games + prior_draws * off
    theta = np.zeros(score.shape[:-1])
    ones = np.full((k, k), 1.0 / k)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(theta[..., None, :] - theta[..., :, None]))  # P(i beats j)
        grad = (w - n * p).sum(-1)
        v = n * p * (1.0 - p)
        laplacian = np.eye(k) * v.sum(-1)[..., None] - v
        # the likelihood ignores a common shift: fix it with the all-ones direction
        step = np.linalg.solve(laplacian + ones, grad[..., None])[..., 0]
        step = np.clip(step, -1.0, 1.0)
        theta = theta + step
        theta -= theta.mean(-1, keepdims=True)
        if np.abs(step).max() < 1e-10:
            break
    return mean + SCALE * theta


def tally(games: list[tuple[int, int, float]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(score, games) matrices from (i, j, score of i) records."""
    score, count = np.zeros((k, k)), np.zeros((k, k))
    for i, j, s in games:
        score[i, j] += s
        score[j, i] += 1.0 - s
        count[i, j] += 1
        count[j, i] += 1
    return score, count


def bootstrap(games: list[tuple[int, int, float]], k: int, samples: int = 1000,
              prior_draws: float = 1.0, mean: float = 1500.0, seed: int = 0) -> np.ndarray:
    """Ratings refitted on ``samples`` resamples of the games: (samples, k).

    Each pair's games are resampled with replacement (a multinomial draw over its wins, draws
    and losses), so every resample has the same schedule as the real tournament. The prior's
    draws join the observed frequencies: a pair with only wins still varies (otherwise its
    interval would have no width at all).
    """
    rng = np.random.default_rng(seed)
    outcomes: dict[tuple[int, int], np.ndarray] = {}
    for i, j, s in games:
        a, b, s = (i, j, s) if i < j else (j, i, 1.0 - s)
        outcomes.setdefault((a, b), np.zeros(3))[[1.0, 0.5, 0.0].index(s)] += 1
    score = np.zeros((samples, k, k))
    count = np.zeros((samples, k, k))
    for (a, b), c in outcomes.items():
        n = int(c.sum())
        p = (c + [0.0, prior_draws, 0.0]) / (n + prior_draws)
        draws = rng.multinomial(n, p, size=samples)  # (samples, 3): wins, draws, losses
        points = draws[:, 0] + 0.5 * draws[:, 1]
        score[:, a, b], score[:, b, a] = points, n - points
        count[:, a, b] = count[:, b, a] = n
    return fit(score, count, prior_draws, mean)


def ratings_with_ci(games: list[tuple[int, int, float]], k: int, samples: int = 1000,
                    prior_draws: float = 1.0, level: float = 0.95, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-likelihood ratings and a bootstrap interval (low, high) around them.

    The interval is the percentile interval of the resampled ratings, recentred on the
    estimate: the prior's draws mixed into the resampling pull every resample a little toward
    the middle, which would otherwise move the interval off an agent that won every game.
    """
    score, count = tally(games, k)
    ratings = fit(score, count, prior_draws)
    boot = bootstrap(games, k, samples, prior_draws, seed=seed)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(boot - boot.mean(0), [tail, 100 - tail], axis=0)
    return ratings, ratings + low, ratings + high
