"""Data: corpus sources, tokenizers, reserved ids, the prepared-data folder, training windows."""
