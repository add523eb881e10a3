"""LSTM-word2vec (paper 2.1.2): the LSTM encoder-decoder of ``lstm.py`` whose
track embedding starts from word2vec vectors (``word2vec.py``: sessions as
documents, window 10, 100-d) concatenated with the track features (the paper
used 26 features, 126-d in all; here the 30 columns of
``schema.TRACK_FEATURE_NAMES``, 130-d).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.data import DataInfo
from models import lstm
from models.lstm import LSTMConfig, LSTMEncoderDecoder
from models.word2vec import Word2VecOptions, pretrain_word2vec, pretrained_vectors


@dataclass
class LSTMWord2VecConfig(LSTMConfig, Word2VecOptions):
    embedding_dim: int = 100  # = the word2vec dimension
    use_track_features: bool = True


def build(config: LSTMWord2VecConfig, task: str, info: DataInfo) -> LSTMEncoderDecoder:
    return LSTMEncoderDecoder(config, task, info, pretrained_vectors(config, info))


pretrain = pretrain_word2vec

# The LSTM's space without the embedding width, which is the word2vec dimension (the paper's 100).
SEARCH_SPACE = {k: v for k, v in lstm.SEARCH_SPACE.items() if k != "embedding_dim"}
PAPER_CONFIGS = {task: dict(config) for task, config in lstm.PAPER_CONFIGS.items()}
