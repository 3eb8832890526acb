"""Generated protobuf and gRPC code for proto/ (regenerate with `python -m server.gen.regenerate`).

Committed; tests/test_proto.py regenerates it and fails on any difference.
"""
