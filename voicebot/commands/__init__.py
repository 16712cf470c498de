"""CLI subcommands: each module exports ``register(subparsers)``; ``voicebot.cli`` finds them."""
