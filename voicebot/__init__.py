"""voicebot: a self-hosted multilingual voice and WhatsApp assistant for government schemes."""

__version__ = "0.1.0"
