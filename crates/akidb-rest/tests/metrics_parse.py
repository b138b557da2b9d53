#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with prometheus_client's own parser.

Prints {"families": {name: type}, "samples": {sample name: count}}; exits non-zero (with the
parser's error) if the text is not valid exposition format.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    families = {}
    samples = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = family.type
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0) + 1
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
