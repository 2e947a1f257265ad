"""Generation: the samplers (``sampling``) and decoding with a stepper (``decoding``)."""
