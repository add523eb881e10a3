"""The vectorised session-replay environment: RLlib's env-runner path, states, rewards of both formulations."""

import numpy as np
import pytest

from data_pipeline.dataset import HALF_LENGTH, open_prepared
from data_pipeline.schema import FIRST_TRACK_ID
from rl.env import (
    CONTEXT_SIZE,
    ENV_NAME,
    HISTORY_LENGTH,
    SessionReplayEnv,
    action_size,
    observation_size,
    register,
)


@pytest.fixture(scope="module")
def one_hot_table(tiny_prepared, tmp_path_factory):
    """Track i's embedding is the one-hot vector of i: under ``paper`` an action picks exactly one track."""
    vocab = open_prepared(tiny_prepared).vocab_size
    path = tmp_path_factory.mktemp("onehot") / "table.npy"
    np.save(path, np.eye(vocab, dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def val(tiny_prepared):
    """The val split as the dataset gives it (independent of the environment's own copy)."""
    return open_prepared(tiny_prepared).numpy_split("val", "paper")


def make_env(data_dir, table, task="skip", formulation="dense", num_envs=4, **extra):
    return SessionReplayEnv({"data_dir": str(data_dir), "embeddings_path": str(table), "task": task,
                             "formulation": formulation, "negative_ratio": 9, "num_envs": num_envs,
                             "split": "val", **extra})


def test_vector_env_runs_through_rllibs_env_runner_with_the_vector_entry_point(tiny_prepared, tiny_table, ray_session):
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from rl.ddpg import DDPGConfig

    register()
    config = (
        DDPGConfig()
        .environment(ENV_NAME, env_config={"data_dir": str(tiny_prepared), "embeddings_path": str(tiny_table),
                                           "task": "skip"}, normalize_actions=False, clip_actions=False)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4, gym_env_vectorize_mode="vector_entry_point")
    )
    runner = SingleAgentEnvRunner(config=config)
    env = runner.env.unwrapped
    assert isinstance(env, SessionReplayEnv) and env.num_envs == 4  # the creator's env itself, not 4 wrapped copies
    assert env.single_action_space.shape == (1,)  # dense skip: one listen score
    episodes = runner.sample(num_episodes=8, random_actions=True)
    done = [e for e in episodes if e.is_done]
    assert len(done) >= 8
    assert all(len(e) == HALF_LENGTH for e in done)  # paper protocol: one step per output track
    for episode in done:
        rewards = np.asarray(episode.get_rewards())
        assert ((rewards >= -1.0) & (rewards <= 1.0)).all()  # 1 - |a - y|^2 / 2 with a, y in [-1, 1]
        observations = np.asarray(episode.get_observations())
        assert all(env.single_observation_space.contains(o) for o in observations)
    runner.stop()


def test_dense_skip_reward_is_one_for_the_outcome_minus_one_for_its_opposite(tiny_prepared, tiny_table, val):
    env = make_env(tiny_prepared, tiny_table)
    sessions = np.array([0, 1, 2, 3])
    for make_action, expected in ((lambda y: y, 1.0), (lambda y: -y, -1.0), (lambda y: 0.0 * y, 0.5)):
        env.reset(options={"sessions": sessions})
        for t in range(HALF_LENGTH):
            y = np.where(val["out_skip_2"][sessions, t] == 0, 1.0, -1.0).astype(np.float32)[:, None]
            _, reward, terminated, truncated, _ = env.step(make_action(y))
            np.testing.assert_allclose(reward, expected, atol=1e-6)
            assert not truncated.any() and terminated.all() == (t == HALF_LENGTH - 1)


def test_dense_seq_reward_scores_the_action_against_the_logged_tracks_centred_unit_row(tiny_prepared, tiny_table, val):
    env = make_env(tiny_prepared, tiny_table, task="seq", num_envs=2)
    rows = np.load(tiny_table).astype(np.float32)
    rows[:FIRST_TRACK_ID] = 0.0
    centred = rows - rows[FIRST_TRACK_ID:].mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    dim = rows.shape[1]
    sessions = np.array([5, 6])
    env.reset(options={"sessions": sessions})
    exact = unit[val["out_tracks"][sessions, 0]] * np.sqrt(dim)
    np.testing.assert_allclose(env.step(exact)[1], 1.0, atol=1e-5)  # the exact answer earns +1
    action = np.random.default_rng(0).uniform(-1, 1, (2, dim)).astype(np.float32)
    expected = 1.0 - ((action / np.sqrt(dim) - unit[val["out_tracks"][sessions, 1]]) ** 2).sum(axis=1) / 2.0
    np.testing.assert_allclose(env.step(action)[1], expected, rtol=1e-5)


def test_paper_skip_reward_plus_one_listened_minus_one_skipped_zero_when_a_negative_wins(tiny_prepared, one_hot_table, val):
    env = make_env(tiny_prepared, one_hot_table, formulation="paper", num_envs=3)
    sessions = np.array([0, 7, 9])
    env.reset(options={"sessions": sessions})
    dim = env.single_action_space.shape[0]
    for t in range(HALF_LENGTH):
        logged = val["out_tracks"][sessions, t]
        action = np.zeros((3, dim), np.float32)
        action[np.arange(3), logged] = 1.0 if t < 5 else -1.0  # point at the logged track, then away from it
        reward = env.step(action)[1]
        listened = val["out_skip_2"][sessions, t] == 0
        expected = np.where(listened, 1.0, -1.0) if t < 5 else np.zeros(3)
        np.testing.assert_array_equal(reward, expected)


def test_paper_seq_reward_is_one_only_for_the_logged_track(tiny_prepared, one_hot_table, val):
    env = make_env(tiny_prepared, one_hot_table, task="seq", formulation="paper", num_envs=2)
    sessions = np.array([3, 4])
    env.reset(options={"sessions": sessions})
    dim = env.single_action_space.shape[0]
    action = np.zeros((2, dim), np.float32)
    action[0, val["out_tracks"][3, 0]] = 1.0  # row 0 points at its logged track
    other = val["out_tracks"][4, 1] if val["out_tracks"][4, 1] != val["out_tracks"][4, 0] else FIRST_TRACK_ID
    action[1, other] = 1.0  # row 1 points at another track
    np.testing.assert_array_equal(env.step(action)[1], [1.0, 0.0])


def _expected_history(data, session, task):
    positive = data["in_mask"][session] & ((data["in_skip_2"][session] == 0) if task == "skip" else True)
    kept = data["in_tracks"][session][positive][-HISTORY_LENGTH:]
    history = np.zeros(HISTORY_LENGTH, np.int64)
    history[HISTORY_LENGTH - len(kept):] = kept
    return history


@pytest.mark.parametrize("task", ["skip", "seq"])
def test_state_holds_the_last_positive_tracks_their_product_with_the_session_and_the_played_track(
    tiny_prepared, tiny_table, val, task
):
    env = make_env(tiny_prepared, tiny_table, task=task, num_envs=1)
    rows = np.load(tiny_table).astype(np.float32)
    rows[:FIRST_TRACK_ID] = 0.0
    dim = rows.shape[1]
    session = 2
    obs, _ = env.reset(options={"sessions": [session]})
    history = _expected_history(val, session, task)
    tracks = rows[history]
    mean = tracks.sum(axis=0) / max((history != 0).sum(), 1)
    wide_deep = obs[0, CONTEXT_SIZE : CONTEXT_SIZE + 2 * HISTORY_LENGTH * dim]
    np.testing.assert_allclose(wide_deep[: HISTORY_LENGTH * dim], tracks.ravel(), rtol=1e-6)
    np.testing.assert_allclose(wide_deep[HISTORY_LENGTH * dim :], (tracks * mean).ravel(), rtol=1e-5, atol=1e-6)
    assert obs.shape == (1, observation_size(task, "dense", dim))
    assert obs[0, CONTEXT_SIZE - 1] == 0.0  # the step
    if task == "skip":  # dense skip: the track about to be played, its product with the session, previous skip
        played = rows[val["out_tracks"][session, 0]]
        np.testing.assert_allclose(obs[0, -(2 * dim + 1) : -(dim + 1)], played, rtol=1e-6)
        np.testing.assert_allclose(obs[0, -(dim + 1) : -1], played * mean, rtol=1e-5, atol=1e-6)
        assert obs[0, -1] == val["in_skip_2"][session, val["n_in"][session] - 1]
    # After a positive output track, it becomes the newest history entry.
    positive = (val["out_skip_2"][session] == 0) if task == "skip" else np.ones(HALF_LENGTH, bool)
    first = int(np.argmax(positive))
    for _ in range(first + 1):
        obs, *_ = env.step(np.zeros((1, action_size(task, "dense", dim)), np.float32))
    newest = obs[0, CONTEXT_SIZE + (HISTORY_LENGTH - 1) * dim : CONTEXT_SIZE + HISTORY_LENGTH * dim]
    np.testing.assert_allclose(newest, rows[val["out_tracks"][session, first]], rtol=1e-6)
    assert obs[0, CONTEXT_SIZE - 1] == pytest.approx((first + 1) / HALF_LENGTH)


def test_a_finished_row_restarts_on_the_next_step_with_reward_zero(tiny_prepared, tiny_table):
    env = make_env(tiny_prepared, tiny_table, num_envs=2)
    env.reset(seed=0, options={"sessions": [0, 1]})
    action = np.ones((2, 1), np.float32)
    for _ in range(HALF_LENGTH):
        obs, reward, terminated, _, _ = env.step(action)
    assert terminated.all()
    obs, reward, terminated, _, _ = env.step(action)  # gymnasium's NEXT_STEP autoreset
    np.testing.assert_array_equal(reward, 0.0)
    assert not terminated.any()
    assert (obs[:, CONTEXT_SIZE - 1] == 0.0).all()  # each row is at the first position of a new session


def test_env_rejects_a_table_of_the_wrong_vocabulary_and_an_unknown_formulation(tiny_prepared, tiny_table, tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((FIRST_TRACK_ID + 1, 4), np.float32))
    with pytest.raises(ValueError, match="does not match the dataset's vocabulary"):
        make_env(tiny_prepared, path)
    with pytest.raises(ValueError, match="unknown DDPG formulation"):
        make_env(tiny_prepared, tiny_table, formulation="sparse")


def test_env_replays_the_prepared_synthetic_dataset_with_the_word2vec_table(synthetic_prepared, tmp_path):
    from rl.env import track_embedding_table

    dataset = open_prepared(synthetic_prepared)
    table = track_embedding_table(dataset, dim=8, seed=0, cache_dir=tmp_path)
    assert np.load(table).shape == (dataset.vocab_size, 8 + dataset.track_features.shape[1])
    env = SessionReplayEnv({"data_dir": str(synthetic_prepared), "embeddings_path": str(table), "task": "skip",
                            "num_envs": 3})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for t in range(HALF_LENGTH):
        obs, reward, terminated, _, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and ((reward >= -1.0) & (reward <= 1.0)).all()
        assert terminated.all() == (t == HALF_LENGTH - 1) and terminated.any() == (t == HALF_LENGTH - 1)
