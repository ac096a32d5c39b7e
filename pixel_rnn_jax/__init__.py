"""Pixel Recurrent Neural Networks in JAX/Flax.

Row LSTM, Diagonal BiLSTM and PixelCNN over colour-masked convolutions, with exact discrete
likelihoods (van den Oord, Kalchbrenner, Kavukcuoglu, ICML 2016).
"""

__version__ = "0.1.0"
