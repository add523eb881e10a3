"""The paper's DDPG recommender on RLlib: the session-replay environment (env.py),
negative sampling (negatives.py), the DDPG algorithm (ddpg/), its search space
(spec.py) and the trainer that plugs it into tuning/ (trainer.py)."""
