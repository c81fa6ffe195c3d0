"""Operator platforms and network servers: their envelopes unwrapped into what the codecs decode."""
