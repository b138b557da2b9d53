"""Decoding OpenAI's base64 embeddings (little-endian f32 bytes), shared by the client scripts."""
import array
import base64
import sys


def decode(data: str) -> list:
    """The vector a base64 `embedding` field holds."""
    values = array.array("f")
    values.frombytes(base64.b64decode(data))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()
