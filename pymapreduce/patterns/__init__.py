"""ZeroMQ building blocks that every role shares: protocol, messages, record codec, sockets."""
