#!/usr/bin/env python3
"""Calls akidb-rest's OpenAI-compatible route with the official `openai` package.

Usage: openai_client.py BASE_URL API_KEY MODEL TEXTS_JSON

Prints one JSON object: the vectors in float mode, in base64 mode (decoded here from the
little-endian f32 bytes), in the client's default mode (it asks for base64 and decodes it
itself), plus the model and usage the server reported.
"""

import json
import sys

import openai

from base64_vectors import decode


def main() -> None:
    base_url, api_key, model, texts_json = sys.argv[1:5]
    texts = json.loads(texts_json)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)

    floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
    encoded = client.embeddings.create(model=model, input=texts, encoding_format="base64")
    default = client.embeddings.create(model=model, input=texts)

    json.dump(
        {
            "model": floats.model,
            "usage": {
                "prompt_tokens": floats.usage.prompt_tokens,
                "total_tokens": floats.usage.total_tokens,
            },
            "float": [item.embedding for item in floats.data],
            "base64": [decode(item.embedding) for item in encoded.data],
            "default": [item.embedding for item in default.data],
            "indexes": [item.index for item in floats.data],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
