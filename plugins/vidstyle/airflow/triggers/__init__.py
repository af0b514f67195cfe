"""Triggers: what waits in the triggerer, holding no worker slot. Each imports on its own in a fresh
interpreter (the triggerer loads a trigger by its class path), without torch, OpenCV or PyAV."""
