/*
 * relay_proto: the records the daemon and arnie-relay exchange (wire.h).
 *
 * The daemon (relay.c) starts arnie-relay with a SOCK_SEQPACKET socket as
 * descriptor 3 and keeps it running between sessions.  Fields are text
 * (numbers in decimal, flags "0"/"1") unless said otherwise.
 *
 *   relay  -> daemon  HELLO    "arnie-relay 1"
 *   daemon -> relay   CONFIG   host, port, use_tls, tls_verify, ca_file,
 *                              username, password, helo, timeout
 *                              (empty: not set)
 *   relay  -> daemon  READY                      or FAILED  message
 *
 * Then, for each session:
 *   daemon -> relay   BEGIN    n (messages)
 *   daemon -> relay   MSG      index, id, sender, size, offset, nrcpts
 *                              + the spool file as a descriptor
 *   daemon -> relay   RCPT     index, rcpt (envelope index), address
 *                              (nrcpts of them after each MSG)
 *   daemon -> relay   GO
 *   relay  -> daemon  RESULT   index, attempted, queue_wide, status, code,
 *                              reply        (status: enum relay_status)
 *   relay  -> daemon  RRESULT  index, rcpt, status, code, reply
 *   relay  -> daemon  DONE     index       (every result of it is sent)
 *   daemon -> relay   ACK      index, stop  (recorded; stop: "1" ends
 *                              the session)
 *   The relay reads an ACK before it ends the next message's data and
 *   before it sends another RESULT, so at most one is outstanding.  A
 *   message's RESULT, RRESULTs and DONE leave together, as the batch's
 *   records do (wire_flush(), in runs of up to WIRE_HELD_MAX): each side
 *   wakes once per run of records.
 *   relay  -> daemon  END      status, reason
 * and at any time:
 *   relay  -> daemon  LOG      priority (syslog's), text
 *
 * The relay exits when the socket closes.  Anything out of this order is
 * a protocol error: the daemon kills the relay and starts another.
 */
#ifndef ARNIE_RELAY_PROTO_H
#define ARNIE_RELAY_PROTO_H

#define RELAY_PROTO_HELLO "arnie-relay 1"
/* The relay's control socket. */
#define RELAY_PROTO_FD 3

enum relay_record {
	RR_HELLO = 1,
	RR_CONFIG,
	RR_READY,
	RR_FAILED,
	RR_BEGIN,
	RR_MSG,
	RR_RCPT,
	RR_GO,
	RR_RESULT,
	RR_RRESULT,
	RR_DONE,
	RR_ACK,
	RR_END,
	RR_LOG,
};

#endif
