#!/usr/bin/env python3
"""Drives akidb-rest with the clients users already have, unchanged.

Usage: clients.py SERVER_URL MODEL TEXTS_JSON

SERVER_URL is the server's root (http://127.0.0.1:PORT). Prints one JSON object with what
each client got:
- openai: `models.list()` ids, vectors in float and base64 mode (decoded here);
- hub_root / hub_embed: `huggingface_hub.InferenceClient(model=URL).feature_extraction`, with
  the server root (TEI's root route) and with URL + "/embed";
- langchain_documents / langchain_query: LangChain's `HuggingFaceEndpointEmbeddings`.
"""

import json
import sys

import openai
from huggingface_hub import InferenceClient
from langchain_huggingface import HuggingFaceEndpointEmbeddings

from base64_vectors import decode


def main() -> None:
    url, model, texts_json = sys.argv[1:4]
    texts = json.loads(texts_json)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    listed = [item.id for item in client.models.list()]
    floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
    encoded = client.embeddings.create(model=model, input=texts, encoding_format="base64")

    root = InferenceClient(model=url, timeout=60).feature_extraction(texts)
    embed = InferenceClient(model=url + "/embed", timeout=60).feature_extraction(texts)

    langchain = HuggingFaceEndpointEmbeddings(model=url)
    documents = langchain.embed_documents(texts)
    query = langchain.embed_query(texts[0])

    json.dump(
        {
            "models": listed,
            "openai_model": floats.model,
            "openai_float": [item.embedding for item in floats.data],
            "openai_base64": [decode(item.embedding) for item in encoded.data],
            "hub_root": root.tolist(),
            "hub_embed": embed.tolist(),
            "langchain_documents": documents,
            "langchain_query": [query],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
