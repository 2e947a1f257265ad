"""Reserved token ids shared by every tokenizer, the n-gram model and the networks.

Id 0 is the start-of-stream symbol: it is the context of a split's first token and
the first input of every network, and it is never a target. Id 1 is ``<unk>``.
"""

BOS_ID = 0
UNK_ID = 1
BOS = "<bos>"
UNK = "<unk>"
EOL = "<eol>"
