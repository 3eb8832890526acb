"""pol's gRPC service around the engine: the servicer, the server process, a client.

Generated protobuf code (server/gen/) is used only inside this package.
"""
