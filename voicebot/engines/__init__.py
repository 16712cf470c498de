"""Model engines behind small async Protocols (see ``base``).

Each heavy library is imported by exactly one module here.
"""
