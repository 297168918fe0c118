/*
 * wire: see wire.h.
 */
#include "autoconf.h"

#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_WORDS 3 /* magic, type, n */

/*
 * The header of a record of type with fields[0..n) into head (room for
 * HEAD_WORDS + WIRE_FIELDS_MAX words): its length in octets, or 0 with
 * errno EMSGSIZE.
 */
static size_t
encode_head(uint32_t *head, uint32_t type, const struct iovec *fields,
    size_t n)
{
	size_t i, total = 0;

	if (n > WIRE_FIELDS_MAX) {
		errno = EMSGSIZE;
		return 0;
	}
	head[0] = WIRE_MAGIC;
	head[1] = type;
	head[2] = (uint32_t)n;
	for (i = 0; i < n; i++) {
		head[HEAD_WORDS + i] = (uint32_t)fields[i].iov_len;
		total += fields[i].iov_len;
	}
	if (total > WIRE_MAX) {
		errno = EMSGSIZE;
		return 0;
	}
	return (HEAD_WORDS + n) * sizeof(uint32_t);
}

/* Room for one descriptor's control message, aligned as a cmsghdr must
 * be (a char array alone need not be). */
union fd_cmsg {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/* mh's control part carries fd (none when negative), in cbuf. */
static void
attach_fd(struct msghdr *mh, union fd_cmsg *cbuf, int fd)
{
	struct cmsghdr *cm;

	if (fd < 0)
		return;
	memset(cbuf, 0, sizeof(*cbuf));
	mh->msg_control = cbuf->buf;
	mh->msg_controllen = sizeof(cbuf->buf);
	cm = CMSG_FIRSTHDR(mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
}

int
wire_send(int sock, uint32_t type, const struct iovec *fields, size_t n,
    int fd)
{
	uint32_t head[HEAD_WORDS + WIRE_FIELDS_MAX];
	struct iovec iov[1 + WIRE_FIELDS_MAX];
	union fd_cmsg cbuf;
	struct msghdr mh;
	size_t hlen;
	ssize_t r;

	if ((hlen = encode_head(head, type, fields, n)) == 0)
		return -1;
	iov[0].iov_base = head;
	iov[0].iov_len = hlen;
	if (n > 0)
		memcpy(iov + 1, fields, n * sizeof(*fields));
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 1 + n;
	attach_fd(&mh, &cbuf, fd);
	/* MSG_NOSIGNAL: a gone peer is EPIPE, not a signal. */
	while ((r = sendmsg(sock, &mh, MSG_NOSIGNAL)) == -1 && errno == EINTR)
		continue;
	return r == -1 ? -1 : 0;
}

/* The NULL-terminated C strings of ap as fields: how many, or -1 with
 * errno EMSGSIZE. */
static ssize_t
text_fields(struct iovec *iov, va_list ap)
{
	const char *s;
	size_t n = 0;

	while ((s = va_arg(ap, const char *)) != NULL) {
		if (n == WIRE_FIELDS_MAX) {
			errno = EMSGSIZE;
			return -1;
		}
		iov[n].iov_base = (void *)s;
		iov[n].iov_len = strlen(s);
		n++;
	}
	return (ssize_t)n;
}

int
wire_sendv(int sock, uint32_t type, int fd, ...)
{
	struct iovec iov[WIRE_FIELDS_MAX];
	ssize_t n;
	va_list ap;

	va_start(ap, fd);
	n = text_fields(iov, ap);
	va_end(ap);
	return n == -1 ? -1 : wire_send(sock, type, iov, (size_t)n, fd);
}

/* One record waiting in a wire_held: its octets, and a descriptor. */
struct held_rec {
	char *buf;
	size_t len;
	int fd;
	union fd_cmsg cbuf;
};

struct wire_held {
	int sock;
	size_t n;
	struct held_rec rec[WIRE_HELD_MAX];
};

struct wire_held *
wire_held_new(int sock)
{
	struct wire_held *h = calloc(1, sizeof(*h));

	if (h != NULL)
		h->sock = sock;
	return h;
}

void
wire_held_free(struct wire_held *h)
{
	size_t i;

	if (h == NULL)
		return;
	for (i = 0; i < h->n; i++) {
		explicit_bzero(h->rec[i].buf, h->rec[i].len);
		free(h->rec[i].buf);
	}
	free(h);
}

int
wire_hold(struct wire_held *h, uint32_t type, const struct iovec *fields,
    size_t n, int fd)
{
	uint32_t head[HEAD_WORDS + WIRE_FIELDS_MAX];
	struct held_rec *hr;
	size_t hlen, i, len;
	char *p;

	if ((hlen = encode_head(head, type, fields, n)) == 0)
		return -1;
	if (h->n == WIRE_HELD_MAX && wire_flush(h) == -1)
		return -1;
	for (len = hlen, i = 0; i < n; i++)
		len += fields[i].iov_len;
	if ((p = malloc(len)) == NULL)
		return -1;
	hr = &h->rec[h->n++];
	hr->buf = p;
	hr->len = len;
	hr->fd = fd;
	memcpy(p, head, hlen);
	p += hlen;
	for (i = 0; i < n; i++) {
		if (fields[i].iov_len > 0)
			memcpy(p, fields[i].iov_base, fields[i].iov_len);
		p += fields[i].iov_len;
	}
	return 0;
}

int
wire_holdv(struct wire_held *h, uint32_t type, int fd, ...)
{
	struct iovec iov[WIRE_FIELDS_MAX];
	ssize_t n;
	va_list ap;

	va_start(ap, fd);
	n = text_fields(iov, ap);
	va_end(ap);
	return n == -1 ? -1 : wire_hold(h, type, iov, (size_t)n, fd);
}

int
wire_flush(struct wire_held *h)
{
	struct mmsghdr mm[WIRE_HELD_MAX];
	struct iovec iov[WIRE_HELD_MAX];
	size_t i, sent = 0;
	int r, saved;

	memset(mm, 0, sizeof(mm));
	for (i = 0; i < h->n; i++) {
		iov[i].iov_base = h->rec[i].buf;
		iov[i].iov_len = h->rec[i].len;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		attach_fd(&mm[i].msg_hdr, &h->rec[i].cbuf, h->rec[i].fd);
	}
	r = 0;
	while (sent < h->n) {
		r = sendmmsg(h->sock, mm + sent, (unsigned)(h->n - sent),
		    MSG_NOSIGNAL);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			break;
		sent += (size_t)r;
	}
	saved = errno;
	/* What was not sent is dropped too: the caller's peer is gone or
	 * the socket broken, and the records cannot be taken back. */
	for (i = 0; i < h->n; i++) {
		explicit_bzero(h->rec[i].buf, h->rec[i].len);
		free(h->rec[i].buf);
	}
	h->n = 0;
	errno = saved;
	return r == -1 ? -1 : 0;
}

int
wire_parse(const char *buf, size_t len, struct wire_rec *r)
{
	uint32_t head[HEAD_WORDS + WIRE_FIELDS_MAX];
	size_t i, hlen, off, total = 0;
	char *out = r->buf;

	r->n = 0;
	if (len < HEAD_WORDS * sizeof(uint32_t))
		goto bad;
	memcpy(head, buf, HEAD_WORDS * sizeof(uint32_t));
	if (head[0] != WIRE_MAGIC || head[2] > WIRE_FIELDS_MAX)
		goto bad;
	hlen = (HEAD_WORDS + head[2]) * sizeof(uint32_t);
	if (len < hlen)
		goto bad;
	memcpy(head, buf, hlen);
	for (i = 0; i < head[2]; i++) {
		if (head[HEAD_WORDS + i] > WIRE_MAX)
			goto bad;
		total += head[HEAD_WORDS + i];
	}
	if (total > WIRE_MAX || len - hlen != total)
		goto bad;
	r->type = head[1];
	r->n = head[2];
	/* Each field copied, then a NUL: buf has room for one per field. */
	for (i = 0, off = hlen; i < r->n; i++) {
		r->len[i] = head[HEAD_WORDS + i];
		memcpy(out, buf + off, r->len[i]);
		out[r->len[i]] = '\0';
		r->field[i] = out;
		out += r->len[i] + 1;
		off += r->len[i];
	}
	return 0;
bad:
	r->n = 0;
	errno = EBADMSG;
	return -1;
}

int
wire_recv(int sock, struct wire_rec *r, int timeout_ms)
{
	char raw[WIRE_MAX + (HEAD_WORDS + WIRE_FIELDS_MAX) * sizeof(uint32_t)];
	union fd_cmsg cbuf;
	struct iovec iov = {raw, sizeof(raw)};
	struct pollfd pfd = {sock, POLLIN, 0};
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t got;
	int pr;

	r->fd = -1;
	r->n = 0;
	/* A record already there is taken without a poll() first: records
	 * mostly come in runs (a batch, a message's results). */
	for (;;) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (got != -1)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		while ((pr = poll(&pfd, 1, timeout_ms)) == -1 &&
		       errno == EINTR)
			continue;
		if (pr == -1)
			return -1;
		if (pr == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
	for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&r->fd, CMSG_DATA(cm), sizeof(int));
	if (got == 0 && r->fd == -1)
		return 0;
	/* A truncated record or descriptors cut off are not records. */
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    wire_parse(raw, (size_t)got, r) == -1) {
		explicit_bzero(raw, (size_t)got);
		if (r->fd != -1)
			close(r->fd);
		r->fd = -1;
		errno = EBADMSG;
		return -1;
	}
	/* The record may hold the password (CONFIG): only the caller's
	 * copy stays, for the caller to wipe. */
	explicit_bzero(raw, (size_t)got);
	return 1;
}

const char *
wire_text(const struct wire_rec *r, size_t i)
{
	if (i >= r->n || memchr(r->field[i], '\0', r->len[i]) != NULL)
		return NULL;
	return r->field[i];
}

int
wire_number(const struct wire_rec *r, size_t i, uint64_t max, uint64_t *out)
{
	const char *s = wire_text(r, i);
	uint64_t v = 0;

	if (s == NULL || *s == '\0' || r->len[i] > 20)
		return -1;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9' || __builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v) ||
		    v > max)
			return -1;
	*out = v;
	return 0;
}
