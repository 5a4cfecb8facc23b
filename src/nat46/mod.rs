//! NAT46/NAT64 translation (RFC 7915, RFC 6052, RFC 7757). Work in progress.
