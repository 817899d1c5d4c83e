"""Partner connectors: one package per partner system; `_template` is what you copy."""
