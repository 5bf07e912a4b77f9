//! Multi-node integration tests live under tests/.
