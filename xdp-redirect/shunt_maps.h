/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The one definition of every map key and value shared between the XDP
 * program and Shunt's userspace. src/xdp/maps.rs mirrors these structs; a
 * Rust test checks the sizes match (tests/xdp_abi.rs via build.rs constants).
 */
#ifndef SHUNT_MAPS_H
#define SHUNT_MAPS_H

#include <linux/types.h>

/* Upper bound on RX queues per interface; XSKMAP is indexed by rx_queue_index. */
#define SHUNT_MAX_QUEUES 64
#define SHUNT_MAX_MATCHES 65536
#define SHUNT_MAX_PREFIXES 4096
#define SHUNT_MAX_ROUTE_PREFIXES 4096

/*
 * Destination match: (address, protocol, port). IPv4 addresses are stored
 * IPv4-mapped (::ffff:a.b.c.d) so one map serves both families. port is in
 * network byte order; port 0 matches any port of (address, protocol) and
 * protocol 0 matches any protocol on the address.
 *
 * pad = SHUNT_MATCH_FRAGMENT (port 0): non-first IP fragments to (address,
 * protocol). They carry no port; Shunt finds their flow from the first
 * fragment (shallow virtual reassembly).
 */
#define SHUNT_MATCH_FRAGMENT 1

struct shunt_match_key {
	__u8 addr[16];
	__u8 proto;
	__u8 pad;
	__be16 port;
};

struct shunt_match_value {
	__u32 pipeline; /* pipeline index, informational for the kernel side */
	__u32 flags;
};

/*
 * Prefix match (BPF LPM trie): SNAT pools and NAT64/46 prefixes. IPv4
 * prefixes are IPv4-mapped, so prefixlen is 96 + the IPv4 prefix length.
 */
struct shunt_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct shunt_lpm_value {
	__u32 pipeline;
	__u32 flags;
};

/*
 * Prefix route (BPF LPM trie): `[[route]] dst` given as a prefix. The
 * protocol and port come first and are always matched whole, so prefixlen
 * is 32 + the address prefix length (IPv4 mapped as above: 32 + 96 + len).
 * Lookups mirror shunt_match: (proto, port), (proto, 0), (0, 0).
 */
struct shunt_route_key {
	__u32 prefixlen;
	__u8 proto;
	__u8 pad;
	__be16 port;
	__u8 addr[16];
};

/* Values of shunt_no_socket[0]. */
#define SHUNT_NO_SOCKET_PASS 0
#define SHUNT_NO_SOCKET_DROP 1

/* Indexes of the per-CPU counter array. */
enum shunt_counter {
	SHUNT_CNT_REDIRECTED = 0,
	SHUNT_CNT_PASSED = 1,
	SHUNT_CNT_REDIRECT_FAILED = 2,
	SHUNT_CNT_NOT_IP = 3,
	SHUNT_CNT_MAX = 4,
};

#endif
