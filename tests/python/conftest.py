import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
# The cross-language scenario table (tests/ops/scenarios.py), read by the
# suites that check it against options.def and the documents.
sys.path.append(os.path.join(os.path.dirname(__file__), "..", "ops"))
