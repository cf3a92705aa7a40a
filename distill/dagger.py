"""DAgger (Ross et al., 2011): the student drives, the teacher labels every state the student visits.

Iteration ``i`` collects with the mixture policy: at each step the teacher's action is applied with
probability ``beta_i``, the student's otherwise; the teacher labels every observation either way. The
labelled observations join the aggregated dataset and the student trains on all of it. Behaviour
cloning is the special case ``beta = 1`` throughout: the student only ever sees the teacher's states,
so its own mistakes take it where it has no data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from distill.actors import Actor
from distill.dataset import Dataset
from models.student import Student


@dataclass(frozen=True)
class Collection:
    """One iteration's labelled observations and how they were gathered.

    Attributes:
        observations: the student's entries, name -> (n, ...).
        labels: the teacher's actions in [-1, 1], float (n, A).
        teacher_steps: steps on which the teacher's action was applied.
        episode_returns: returns of the episodes that finished within the iteration.
    """

    observations: dict[str, np.ndarray]
    labels: np.ndarray
    teacher_steps: int
    episode_returns: tuple[float, ...]
    episodes: np.ndarray | None = None
    """Each row's episode number within this collection, int (n,); rows of an episode are consecutive."""


def collect(
    env: gym.Env[dict[str, np.ndarray], np.ndarray],
    student: Actor,
    teacher: Actor,
    beta: float,
    steps: int,
    names: Sequence[str],
    bounds: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    first_seed: int,
    progress: Callable[[], None] | None = None,
    replay_seeds: Sequence[int] = (),
    noise: float = 0.0,
) -> Collection:
    """Run the mixture policy for ``steps`` steps; the teacher labels every observation.

    Args:
        env: an environment whose observations hold what both student and teacher read.
        student: the student's actor.
        teacher: the teacher's actor (its actions are the labels).
        beta: probability that a step applies the teacher's action.
        steps: observations to collect (episodes restart as they end).
        names: the student's observation entries (what the dataset stores).
        bounds: (low, high) action bounds, to express labels in [-1, 1].
        rng: draws who drives each step.
        first_seed: episode ``j`` of this collection resets with ``first_seed + j``, after the replays.
        progress: called after every step (e.g. to advance a progress bar).
        replay_seeds: the first episodes reset with these seeds, in order: episodes where the student
            failed, replayed so that the teacher labels the states that led there.
        noise: where the teacher drives, Gaussian noise of this standard deviation (in [-1, 1] action
            units) is added to its applied action, clipped to the bounds (DART, Laskey et al. 2017): the
            states drift as the student's will, and the labels stay the teacher's own actions.
    """
    low, high = bounds
    stored: dict[str, list[np.ndarray]] = {name: [] for name in names}
    labels: list[np.ndarray] = []
    returns: list[float] = []
    teacher_steps, episode, total = 0, 0, 0.0

    def seed_of(j: int) -> int:
        return int(replay_seeds[j]) if j < len(replay_seeds) else first_seed + j - len(replay_seeds)

    observation, _ = env.reset(seed=seed_of(0))
    rows_episode: list[int] = []
    for _ in range(steps):
        label = teacher(observation)
        for name in names:
            stored[name].append(observation[name])
        labels.append(label)
        rows_episode.append(episode)
        if rng.random() < beta:
            action, teacher_steps = label, teacher_steps + 1
            if noise > 0:
                jitter = rng.normal(0.0, noise, size=np.shape(label)) * (high - low) / 2
                action = np.clip(label + jitter, low, high).astype(np.float32)
        else:
            action = student(observation)
        observation, reward, terminated, truncated, _ = env.step(action)
        if progress is not None:
            progress()
        total += float(reward)
        if terminated or truncated:
            returns.append(total)
            episode, total = episode + 1, 0.0
            observation, _ = env.reset(seed=seed_of(episode))
    normalized = 2.0 * (np.stack(labels) - low) / (high - low) - 1.0
    return Collection(
        {name: np.stack(values) for name, values in stored.items()},
        normalized.astype(np.float32),
        teacher_steps,
        tuple(returns),
        np.asarray(rows_episode, dtype=np.int64),
    )


def chunk_labels(labels: np.ndarray, episodes: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's next ``horizon`` labels along its own trajectory, and which of them exist.

    Args:
        labels: per-step labels in collection order, float (n, A).
        episodes: each row's episode number in the collection (n,): rows of one episode are consecutive.
        horizon: H.

    Returns:
        (n, H, A) labels, row t holding labels t to t + H - 1 (the last real one repeated past the
        end of its episode or of the collection), and the (n, H) mask: 1 where the label is real.
    """
    n = len(labels)
    index = np.arange(n)[:, None] + np.arange(horizon)[None, :]
    clipped = np.minimum(index, n - 1)
    real = (index < n) & (episodes[clipped] == episodes[:, None])
    # Past the end, repeat the row's last real label (a defined value; the mask leaves it out of the loss).
    last = np.where(real, index, -1).max(axis=1, keepdims=True)
    source = np.where(real, index, last)
    return labels[source].astype(np.float32), real.astype(np.float32)


def _to(tensor: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    if device is None or device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def train_student(
    student: Student,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    updates: int,
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device | None = None,
) -> dict[str, float]:
    """``updates`` gradient steps of mean squared error to the teacher's labels, in [-1, 1] action space.

    A chunked student's error is averaged over the labels its mask keeps.

    The student trains where its parameters are; ``device`` (the CPU by default) must be that place.

    Returns:
        ``loss/imitation_first`` and ``loss/imitation_last``: mean loss over the first and last tenth
        of the steps (the trend within the iteration).
    """
    student.train()
    losses = []
    for _ in range(updates):
        rows = rng.choice(len(dataset), size=min(batch_size, len(dataset)), replace=False)
        observations, labels, mask = dataset.masked_batch(rows)
        batch = {name: _to(torch.from_numpy(value), device) for name, value in observations.items()}
        predicted, target = student.normalized(batch), _to(torch.from_numpy(labels), device)
        if student.chunk == 1:
            loss = F.mse_loss(predicted, target)
        else:  # a chunk's labels past its episode's end do not count
            weights = _to(torch.from_numpy(mask), device)
            per_step = ((predicted - target) ** 2).mean(dim=-1)
            loss = (per_step * weights).sum() / weights.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    student.eval()
    tenth = max(1, updates // 10)
    return {
        "loss/imitation_first": float(np.mean(losses[:tenth])),
        "loss/imitation_last": float(np.mean(losses[-tenth:])),
    }
