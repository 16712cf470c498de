"""Model engines behind small async Protocols (see ``base``); each heavy library lives in one module."""
