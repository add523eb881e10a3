"""The session-replay environment: gymnasium's and RLlib's checks, states, rewards."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from data_pipeline.schema import FIRST_TRACK_ID
from rl.env import ENV_NAME, HISTORY_LENGTH, SessionReplayEnv, observation_size, register


@pytest.fixture(scope="module")
def one_hot_table(tiny_prepared, tmp_path_factory):
    """Track i's embedding is the one-hot vector of i: an action picks exactly one track."""
    from data_pipeline.dataset import open_prepared

    vocab = open_prepared(tiny_prepared).vocab_size
    table = np.eye(vocab, dtype=np.float32)
    path = tmp_path_factory.mktemp("onehot") / "table.npy"
    np.save(path, table)
    return path


def make_env(data_dir, table, task="skip", **extra):
    return SessionReplayEnv(
        {"data_dir": str(data_dir), "embeddings_path": str(table), "task": task, "negative_ratio": 9, **extra}
    )


def test_env_passes_gymnasium_env_checker(tiny_prepared, tiny_table):
    env = make_env(tiny_prepared, tiny_table)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (observation_size(30),)
    assert env.action_space.shape == (30,)


def test_env_passes_rllib_env_runner_checks_and_replays_whole_output_halves(tiny_prepared, tiny_table, ray_session):
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from rl.ddpg import DDPGConfig

    register()
    config = DDPGConfig().environment(
        ENV_NAME,
        env_config={"data_dir": str(tiny_prepared), "embeddings_path": str(tiny_table), "task": "skip", "negative_ratio": 9},
    )
    runner = SingleAgentEnvRunner(config=config)  # gym.make with gymnasium's passive checker, RLlib's spaces check
    episodes = runner.sample(num_episodes=3, random_actions=False)
    assert [len(e) for e in episodes] == [10, 10, 10]  # paper protocol: one step per output track
    assert all(set(np.unique(e.get_rewards())) <= {-1.0, 0.0, 1.0} for e in episodes)
    runner.stop()


def test_skip_rewards_listened_plus_one_skipped_minus_one_negative_zero(tiny_prepared, one_hot_table):
    env = make_env(tiny_prepared, one_hot_table)
    obs, _ = env.reset(options={"session": 0})
    out_tracks, out_skips = env.data["out_tracks"][0], env.data["out_skip_2"][0]
    rewards = []
    for t in range(10):
        action = np.zeros(env.action_space.shape, np.float32)
        if t < 5:
            action[out_tracks[t]] = 1.0  # point at the logged track: it is chosen
        else:
            action[out_tracks[t]] = -1.0  # point away: a negative (score 0 > -1) is chosen
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert (info["chosen"] == info["positive"]) == (t < 5)
    expected = [1.0 if s == 0 else -1.0 for s in out_skips[:5]] + [0.0] * 5
    assert rewards == expected
    assert terminated and not truncated


def test_seq_rewards_one_only_for_the_logged_next_track(tiny_prepared, one_hot_table):
    env = make_env(tiny_prepared, one_hot_table, task="seq")
    env.reset(options={"session": 3})
    positive = env.data["out_tracks"][3, 0]
    hit = np.zeros(env.action_space.shape, np.float32)
    hit[positive] = 1.0
    assert env.step(hit)[1] == 1.0
    miss = np.zeros(env.action_space.shape, np.float32)
    miss[env.data["out_tracks"][3, 1]] = -1.0
    assert env.step(miss)[1] == 0.0


def test_state_holds_last_five_listened_tracks_and_their_product_with_the_session(tiny_prepared, tiny_table):
    env = make_env(tiny_prepared, tiny_table)
    obs, _ = env.reset(options={"session": 2})
    data, table = env.data, env.table
    listened = data["in_tracks"][2][(data["in_skip_2"][2] == 0) & data["in_mask"][2]][-HISTORY_LENGTH:]
    history = np.zeros(HISTORY_LENGTH, np.int64)
    history[-len(listened):] = listened
    tracks = table[history]  # (5, D)
    session = tracks.sum(axis=0) / max(len(listened), 1)
    dim = table.shape[1]
    deep = obs[-2 * HISTORY_LENGTH * dim :]
    np.testing.assert_allclose(deep[: HISTORY_LENGTH * dim], tracks.ravel(), rtol=1e-6)
    np.testing.assert_allclose(deep[HISTORY_LENGTH * dim :], (tracks * session).ravel(), rtol=1e-5)
    # After a listened output track, it becomes the newest history entry.
    first = int(np.argmax(data["out_skip_2"][2] == 0))
    for _ in range(first + 1):
        obs, *_ = env.step(np.zeros(dim, np.float32))
    np.testing.assert_allclose(obs[-2 * HISTORY_LENGTH * dim :][(HISTORY_LENGTH - 1) * dim : HISTORY_LENGTH * dim],
                               table[data["out_tracks"][2, first]], rtol=1e-6)


def test_env_rejects_a_table_of_the_wrong_vocabulary(tiny_prepared, tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((FIRST_TRACK_ID + 1, 4), np.float32))
    with pytest.raises(ValueError, match="does not match the dataset's vocabulary"):
        make_env(tiny_prepared, path)


def test_env_replays_the_prepared_synthetic_dataset_with_the_word2vec_table(synthetic_prepared, tmp_path):
    from data_pipeline.dataset import open_prepared
    from rl.env import track_embedding_table

    dataset = open_prepared(synthetic_prepared)
    table = track_embedding_table(dataset, dim=8, seed=0, cache_dir=tmp_path)
    assert np.load(table).shape == (dataset.vocab_size, 8 + dataset.track_features.shape[1])
    env = make_env(synthetic_prepared, table)
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    steps, terminated = 0, False
    while not terminated:
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        assert reward in (-1.0, 0.0, 1.0) and info["positive"] >= FIRST_TRACK_ID
        steps += 1
    assert steps == 10
