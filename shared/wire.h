/*
 * wire: records between the daemon and its relay program (arnie-relay).
 *
 * Generic layer: knows records and fields, nothing of mail.  The two ends
 * share a SOCK_SEQPACKET unix socket, so one send is one record and
 * records never run together; a record may carry one open descriptor
 * (SCM_RIGHTS), how the daemon hands the relay a spool file without
 * telling it where the spool is.
 *
 * A record, in host byte order (both ends are the same machine):
 *
 *   u32 magic   WIRE_MAGIC, which also carries the protocol version
 *   u32 type    the caller's record type
 *   u32 n       number of fields, at most WIRE_FIELDS_MAX
 *   u32 len[n]  each field's length
 *   field bytes, one after the other, adding up to the rest of the record
 *
 * wire_recv() checks all of that: a record that is short, too long, from
 * another version, or whose lengths do not add up is EBADMSG, never a
 * partial result.  Fields are byte strings; wire_recv() NUL-terminates each
 * one in its buffer, so text fields can be used as C strings (a field
 * holding a NUL octet is refused where a caller asks for text, see
 * wire_text()).  wire_recv() wipes its own buffer after the copy, so that
 * a secret (CONFIG holds the password) is left only in the caller's
 * record.  Every function is safe to use from one thread per socket; none
 * logs.
 */
#ifndef ARNIE_WIRE_H
#define ARNIE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* "AR1" and a version octet: a relay from another version is refused. */
#define WIRE_VERSION 1
#define WIRE_MAGIC (0x41523100u | WIRE_VERSION)
/* Largest record: a field holds at most a reply or an address, and no
 * record has many fields; large things (recipients) go one a record. */
#define WIRE_MAX 16384
#define WIRE_FIELDS_MAX 16

struct wire_rec {
	uint32_t type;
	size_t n;                          /* fields */
	const char *field[WIRE_FIELDS_MAX]; /* into buf, NUL-terminated */
	size_t len[WIRE_FIELDS_MAX];
	int fd;   /* a descriptor that came with it (owned by the caller:
	           * close it), or -1 */
	char buf[WIRE_MAX + WIRE_FIELDS_MAX];
};

/*
 * Send one record of type with fields[0..n) (iov_len may be 0), and fd
 * (-1 for none).  0, or -1 with errno: EMSGSIZE when it would exceed
 * WIRE_MAX or WIRE_FIELDS_MAX, EPIPE when the peer is gone, or another
 * send error.  Blocks until the socket takes the record.
 */
int wire_send(int sock, uint32_t type, const struct iovec *fields, size_t n,
    int fd);

/* wire_send() with text fields: a NULL-terminated list of C strings. */
int wire_sendv(int sock, uint32_t type, int fd, ...);

/*
 * Records held back to leave together: wire_hold() keeps a copy of each,
 * wire_flush() sends them all with one sendmmsg(), so that the peer wakes
 * once for a run of records (a message's results, a batch) instead of once
 * per record.  The order is kept.  A descriptor held with a record must
 * stay open until the flush.  When WIRE_HELD_MAX records are held, the next
 * wire_hold() flushes first.  wire_held_new() returns NULL when out of
 * memory; the others return 0, or -1 with errno as wire_send() (a failed
 * flush drops what it could not send: the peer is gone).
 */
#define WIRE_HELD_MAX 64

struct wire_held;

struct wire_held *wire_held_new(int sock);
void wire_held_free(struct wire_held *h);
int wire_hold(struct wire_held *h, uint32_t type, const struct iovec *fields,
    size_t n, int fd);
/* wire_hold() with text fields: a NULL-terminated list of C strings. */
int wire_holdv(struct wire_held *h, uint32_t type, int fd, ...);
int wire_flush(struct wire_held *h);

/*
 * Receive one record into r, waiting at most timeout_ms (negative: no
 * limit).  1: a record; 0: the peer closed the socket; -1 with errno:
 * ETIMEDOUT, EBADMSG (not a record of this version: see above; a
 * descriptor that came with it is closed), or a receive error.
 */
int wire_recv(int sock, struct wire_rec *r, int timeout_ms);

/* Parse a whole record from buf[0..len) (what wire_recv() does after the
 * receive; for tests and the fuzzer).  0, or -1 with errno EBADMSG. */
int wire_parse(const char *buf, size_t len, struct wire_rec *r);

/* Field i as text: NULL when there is no such field or it holds a NUL
 * octet. */
const char *wire_text(const struct wire_rec *r, size_t i);

/* Field i as a decimal number no larger than max: 0 and *out, or -1. */
int wire_number(const struct wire_rec *r, size_t i, uint64_t max,
    uint64_t *out);

#endif
