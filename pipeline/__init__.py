"""seqlab: a reproducible laboratory for sequence models (n-gram, RNN, LSTM, GRU, conv, Transformer)."""
