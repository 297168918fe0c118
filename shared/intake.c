/*
 * intake: see intake.h.
 *
 * A message is held in memory until it outgrows the buffer.  Then its
 * header section must be complete: the octets up to the last CRLF are
 * examined (message_scan()), and once they hold the end of the header
 * section (an empty line, or a line that is no header field) the message
 * so far is completed with message_fixup() exactly as a whole message
 * would be (the fixes only ever concern the header section, and a prefix
 * cut at a CRLF has no last line to mend), written to a spool draft
 * behind the Received: field, and everything after it goes to the draft
 * as it comes.  The one fix that depends on the end, a last line without
 * its CRLF, is made at intake_end() from the last two octets written.
 */
#include "autoconf.h"

#include "intake.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "envelope.h"
#include "message.h"
#include "spool.h"
#include "xmalloc.h"

struct intake {
	struct spool *spool;
	struct envelope *env;
	char *received;
	struct intake_opts opts;
	time_t when;

	char *buf; /* the message so far, until it goes to a draft */
	size_t len, cap;
	size_t scanned; /* buf[0..scanned) was found to hold no header end */
	struct spool_draft *draft; /* once the message outgrew the buffer */
	char tail[2];              /* the last octets written to the draft */
	size_t ntail;              /* how many of them there are */

	struct message_fix fix; /* the completion of the header section */
	struct message_lines lines;
	size_t octets; /* received */
	enum intake_status status;
	int error;
};

struct intake *
intake_new(struct spool *spool, struct envelope *env, const char *received,
    const struct intake_opts *opts, time_t when)
{
	struct intake *in = xcalloc(1, sizeof(*in));

	in->spool = spool;
	in->env = env;
	in->received = xstrdup(received);
	in->opts = *opts;
	if (in->opts.buffer == 0)
		in->opts.buffer = INTAKE_BUFFER;
	in->when = when;
	in->status = INTAKE_OK;
	return in;
}

/* Refuse the message: nothing of it is kept from now on. */
static void
refuse(struct intake *in, enum intake_status status, int error)
{
	in->status = status;
	in->error = error;
	free(in->buf);
	in->buf = NULL;
	in->len = in->cap = 0;
	spool_draft_abort(in->spool, in->draft);
	in->draft = NULL;
}

/* Keep the last two octets written to the draft (tail[1] the last). */
static void
remember_tail(struct intake *in, const char *p, size_t n)
{
	size_t i;

	for (i = n > 2 ? n - 2 : 0; i < n; i++) {
		in->tail[0] = in->tail[1];
		in->tail[1] = p[i];
		if (in->ntail < 2)
			in->ntail++;
	}
}

static void
write_draft(struct intake *in, const struct iovec *iov, int n)
{
	if (spool_draft_write(in->draft, iov, n) == -1)
		refuse(in, INTAKE_IOERR, errno);
}

/* Where the last CRLF of buf[0..len) ends, or 0. */
static size_t
last_crlf_end(const char *buf, size_t len)
{
	size_t i;

	for (i = len; i >= 2; i--)
		if (buf[i - 2] == '\r' && buf[i - 1] == '\n')
			return i;
	return 0;
}

/*
 * The message outgrew the buffer: if its header section is complete,
 * start the draft with the completed message so far.
 */
static void
spill(struct intake *in)
{
	struct message_scan scan;
	struct iovec *iov;
	size_t cut = last_crlf_end(in->buf, in->len);
	bool complete;
	int n;

	if (cut <= in->scanned)
		complete = false; /* no new line since the last look */
	else {
		message_scan(in->buf, cut, in->opts.fix_opts, &scan);
		complete = scan.end != MESSAGE_END_EOF;
		message_scan_clear(&scan);
		in->scanned = cut;
	}
	if (!complete) {
		if (in->len > INTAKE_HEADER_MAX)
			refuse(in, INTAKE_HEADER_TOOBIG, 0);
		return;
	}
	if ((in->draft = spool_draft_new(in->spool, in->env)) == NULL) {
		refuse(in, INTAKE_IOERR, errno);
		return;
	}
	message_fixup(&in->fix, in->buf, cut, in->opts.fix_opts, in->env->id,
	    in->env->sender, in->opts.hostname, in->when);
	n = message_iovcnt(&in->fix) + 2;
	iov = xreallocarray(NULL, (size_t)n, sizeof(*iov));
	iov[0].iov_base = in->received;
	iov[0].iov_len = strlen(in->received);
	if ((n = message_iov(&in->fix, in->buf, cut, iov + 1, n - 2)) < 0)
		arnie_panic("message_iov: iovec array too small");
	iov[n + 1].iov_base = in->buf + cut;
	iov[n + 1].iov_len = in->len - cut;
	remember_tail(in, in->buf, in->len);
	write_draft(in, iov, n + 2);
	free(iov);
	free(in->buf);
	in->buf = NULL;
	in->len = in->cap = 0;
}

static void
hold(struct intake *in, const char *p, size_t n)
{
	size_t cap;

	if (n > in->cap - in->len) {
		cap = in->cap > 0 ? in->cap : 8192;
		while (cap - in->len < n)
			cap *= 2;
		in->buf = xreallocarray(in->buf, cap, 1);
		in->cap = cap;
	}
	memcpy(in->buf + in->len, p, n);
	in->len += n;
}

bool
intake_add(struct intake *in, const void *buf, size_t len)
{
	struct iovec iov = {(void *)buf, len};

	if (in->status != INTAKE_OK)
		return false;
	in->octets += len;
	if (in->opts.max_size > 0 && in->octets > in->opts.max_size) {
		refuse(in, INTAKE_TOOBIG, 0);
		return false;
	}
	message_lines_feed(&in->lines, buf, len);
	if (in->draft != NULL) {
		remember_tail(in, buf, len);
		write_draft(in, &iov, 1);
	} else {
		hold(in, buf, len);
		if (in->len > in->opts.buffer)
			spill(in);
	}
	return in->status == INTAKE_OK;
}

enum intake_status
intake_end(struct intake *in)
{
	struct iovec iov;

	if (in->status != INTAKE_OK)
		return in->status;
	if (in->lines.longest > MESSAGE_LINE_MAX) {
		refuse(in, INTAKE_LONGLINE, 0);
		return in->status;
	}
	if (in->draft == NULL) {
		/* All of it in memory: completed as a whole. */
		message_fixup(&in->fix, in->buf, in->len, in->opts.fix_opts,
		    in->env->id, in->env->sender, in->opts.hostname, in->when);
		return INTAKE_OK;
	}
	/* The relay would end a last line without its CRLF; so does the
	 * spool (message_scan()'s eol_fix, for the part it did not see). */
	if (in->ntail < 2 || in->tail[0] != '\r' || in->tail[1] != '\n') {
		iov.iov_base = in->tail[1] == '\r' ? "\n" : "\r\n";
		iov.iov_len = strlen(iov.iov_base);
		write_draft(in, &iov, 1);
	}
	return in->status;
}

int
intake_commit(struct intake *in)
{
	struct iovec *iov;
	struct spool_draft *d = in->draft;
	int n, rc;

	if (in->status != INTAKE_OK)
		arnie_panic("intake_commit: a refused message");
	if (d != NULL) {
		in->draft = NULL; /* freed by the commit, whatever happens */
		return spool_draft_commit(in->spool, d);
	}
	n = message_iovcnt(&in->fix) + 1;
	iov = xreallocarray(NULL, (size_t)n, sizeof(*iov));
	iov[0].iov_base = in->received;
	iov[0].iov_len = strlen(in->received);
	if ((n = message_iov(&in->fix, in->buf != NULL ? in->buf : "",
	         in->len, iov + 1, n - 1)) < 0)
		arnie_panic("message_iov: iovec array too small");
	rc = spool_write(in->spool, in->env, iov, n + 1);
	free(iov);
	return rc;
}

struct envelope *
intake_envelope(const struct intake *in)
{
	return in->env;
}

int
intake_errno(const struct intake *in)
{
	return in->error;
}

size_t
intake_received(const struct intake *in)
{
	return in->octets;
}

size_t
intake_longest_line(const struct intake *in)
{
	return in->lines.longest;
}

void
intake_log_fixes(const struct intake *in)
{
	message_fix_log(&in->fix, in->env->id);
}

void
intake_free(struct intake *in)
{
	if (in == NULL)
		return;
	spool_draft_abort(in->spool, in->draft);
	free(in->buf);
	free(in->received);
	message_fix_clear(&in->fix);
	envelope_free(in->env);
	free(in);
}
