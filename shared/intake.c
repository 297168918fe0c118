/*
 * intake: see intake.h.
 *
 * A message is held in memory until it outgrows the buffer; meanwhile each
 * whole line of its header section is looked at once, as it completes
 * (message_line_ends_header()), until the section's end is found.  Then,
 * at the first flush, the message so far, cut at its last CRLF, is
 * completed with message_fixup() exactly as a whole message would be (the
 * fixes only ever concern the header section, and a prefix cut at a CRLF
 * has no last line to mend), written to a spool draft behind the
 * Received: field with the octets after the cut, and every later flush
 * appends what was held.  The one fix that depends on the end, a last
 * line without its CRLF, is made by the commit from the last two octets
 * written.
 */
#include "autoconf.h"

#include "intake.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "dedup.h"
#include "envelope.h"
#include "log.h"
#include "message.h"
#include "spool.h"
#include "timefmt.h"
#include "xmalloc.h"

struct intake {
	struct spool *spool;
	struct envelope *env;
	char *received;
	struct intake_opts opts;
	time_t when;

	char *buf; /* held octets, not yet in the draft */
	size_t len, cap;
	/* Until the header section's end is found (in memory only): */
	size_t line_start; /* where the next unexamined line starts */
	size_t searched;   /* no CRLF in buf[line_start..searched) */
	bool in_field;     /* the lines examined so far were a field's */
	bool header_done;  /* the section's end is among them */

	struct spool_draft *draft; /* once the message outgrew the buffer */
	char tail[2];              /* the last octets written to the draft */
	size_t ntail;              /* how many of them there are */

	struct message_fix fix; /* the completion of the header section */
	struct message_lines lines;
	size_t octets; /* received */
	enum intake_status status;
	int error;
	char *refusal;  /* INTAKE_BADFIELD's text */
	bool own_msgid; /* the client's Message-ID, not one Arnie added */
	char dup_of[SPOOL_IDLEN + 1]; /* "" unless a duplicate (dedup.h) */
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

static void
drop_held(struct intake *in)
{
	free(in->buf);
	in->buf = NULL;
	in->len = in->cap = 0;
}

/* Refuse the message: nothing of it is kept from now on. */
static void
refuse(struct intake *in, enum intake_status status, int error)
{
	in->status = status;
	in->error = error;
	drop_held(in);
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
	int i;

	for (i = 0; i < n; i++)
		remember_tail(in, iov[i].iov_base, iov[i].iov_len);
	if (spool_draft_write(in->draft, iov, n) == -1)
		refuse(in, INTAKE_IOERR, errno);
}

/* Look at the header lines completed since last time; each octet is
 * searched once. */
static void
examine_header(struct intake *in)
{
	const char *crlf;
	size_t from, end;

	while (!in->header_done) {
		from = in->searched > in->line_start + 1 ? in->searched - 1
		                                         : in->line_start;
		crlf = memmem(in->buf + from, in->len - from, "\r\n", 2);
		if (crlf == NULL) {
			in->searched = in->len;
			return;
		}
		end = (size_t)(crlf - in->buf) + 2;
		if (message_line_ends_header(in->buf + in->line_start,
		        end - in->line_start, in->in_field))
			in->header_done = true;
		else
			in->in_field = true;
		in->line_start = in->searched = end;
	}
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

/* s fit to be echoed in a reply: printable ASCII but '%' (the MTA's
 * reply functions would take it for a format). */
static void
printable(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e ||
		    *s == '%')
			*s = '?';
}

/* The earlier of two expiry times, 0 meaning none. */
static time_t
earlier(time_t a, time_t b)
{
	return a == 0 || (b != 0 && b < a) ? b : a;
}

/*
 * Complete the header section of hdr[0..len) and tell the envelope what
 * it says (intake.h); false when the message is refused for it.
 */
static bool
complete_header(struct intake *in, const char *hdr, size_t len)
{
	struct envelope *env = in->env;
	char *v;
	time_t t;
	long secs;

	message_fixup(&in->fix, hdr, len, in->opts.fix_opts, env->id,
	    env->sender, in->opts.hostname, in->when);
	free(env->message_id);
	in->own_msgid = !in->fix.add[MESSAGE_ID];
	if (in->fix.add[MESSAGE_ID])
		env->message_id = xasprintf("<%s@%s>", env->id,
		    in->opts.hostname != NULL ? in->opts.hostname
		                              : "localhost");
	else
		env->message_id = message_field_value(hdr, len, "Message-ID");
	/* An empty field names nothing: never a key for dedup. */
	if (env->message_id != NULL && env->message_id[0] == '\0') {
		free(env->message_id);
		env->message_id = NULL;
		in->own_msgid = false;
	}
	env->expires = 0;
	if ((v = message_field_value(hdr, len, "X-Arnie-Expire-After")) !=
	    NULL) {
		if (timefmt_parse_duration(v, &secs) == -1) {
			printable(v);
			in->refusal = xasprintf("X-Arnie-Expire-After: '%.60s' "
			                        "is not a duration (90s, 15m, "
			                        "2h, 1d)",
			    v);
			free(v);
			refuse(in, INTAKE_BADFIELD, 0);
			return false;
		}
		env->expires = in->when + secs;
		free(v);
	}
	if ((v = message_field_value(hdr, len, "Expires")) != NULL &&
	    timefmt_parse_date(v, &t) == 0) {
		/* Past already: it would never be sent; say so now, while
		 * the application can still act. */
		if (t <= in->when) {
			printable(v);
			in->refusal =
			    xasprintf("Expires: %.60s has passed; the "
			              "message would never be sent",
			        v);
			free(v);
			refuse(in, INTAKE_BADFIELD, 0);
			return false;
		}
		env->expires = earlier(env->expires, t);
	} else if (env->expires == 0 && in->opts.default_expire > 0)
		/* Without a deadline of its own (one that does not parse is
		 * ignored, as if absent). */
		env->expires = in->when + in->opts.default_expire;
	free(v);
	return true;
}

/* The first flush: a draft with the completed message so far. */
static void
start_draft(struct intake *in)
{
	struct iovec *iov;
	size_t cut = last_crlf_end(in->buf, in->len);
	int n;

	/* First: the envelope written with the draft learns from it. */
	if (!complete_header(in, in->buf, cut))
		return;
	if ((in->draft = spool_draft_new(in->spool, in->env)) == NULL) {
		refuse(in, INTAKE_IOERR, errno);
		return;
	}
	n = message_iovcnt(&in->fix) + 2;
	iov = xreallocarray(NULL, (size_t)n, sizeof(*iov));
	iov[0].iov_base = in->received;
	iov[0].iov_len = strlen(in->received);
	if ((n = message_iov(&in->fix, in->buf, cut, iov + 1, n - 2)) < 0)
		arnie_panic("message_iov: iovec array too small");
	iov[n + 1].iov_base = in->buf + cut;
	iov[n + 1].iov_len = in->len - cut;
	write_draft(in, iov, n + 2);
	free(iov);
}

void
intake_flush(struct intake *in)
{
	struct iovec iov;

	if (in->status != INTAKE_OK || in->len == 0)
		return;
	if (in->draft == NULL)
		start_draft(in);
	else {
		iov.iov_base = in->buf;
		iov.iov_len = in->len;
		write_draft(in, &iov, 1);
	}
	/* Written: the header section's buffer may have grown large. */
	drop_held(in);
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
	if (in->status != INTAKE_OK)
		return false;
	in->octets += len;
	if (in->opts.max_size > 0 && in->octets > in->opts.max_size) {
		refuse(in, INTAKE_TOOBIG, 0);
		return false;
	}
	message_lines_feed(&in->lines, buf, len);
	hold(in, buf, len);
	if (in->draft == NULL && !in->header_done) {
		examine_header(in);
		if (!in->header_done && in->len > INTAKE_HEADER_MAX) {
			refuse(in, INTAKE_HEADER_TOOBIG, 0);
			return false;
		}
	}
	return true;
}

bool
intake_wants_flush(const struct intake *in)
{
	return in->status == INTAKE_OK && in->len > in->opts.buffer &&
	       (in->draft != NULL || in->header_done);
}

enum intake_status
intake_end(struct intake *in)
{
	if (in->status != INTAKE_OK)
		return in->status;
	if (in->lines.longest > MESSAGE_LINE_MAX) {
		refuse(in, INTAKE_LONGLINE, 0);
		return in->status;
	}
	/* All of it in memory: completed as a whole. */
	if (in->draft == NULL &&
	    !complete_header(in, in->buf != NULL ? in->buf : "", in->len))
		return in->status;
	return INTAKE_OK;
}

/* The rest of a draft: what is held, the last line's CRLF if it lacks
 * one (message_scan()'s eol_fix, for the part it did not see). */
static int
finish_draft(struct intake *in)
{
	struct iovec iov;
	struct spool_draft *d;

	intake_flush(in);
	if (in->status == INTAKE_OK &&
	    (in->ntail < 2 || in->tail[0] != '\r' || in->tail[1] != '\n')) {
		iov.iov_base = in->tail[1] == '\r' ? "\n" : "\r\n";
		iov.iov_len = strlen(iov.iov_base);
		write_draft(in, &iov, 1);
	}
	if (in->status != INTAKE_OK) {
		errno = in->error;
		return -1;
	}
	d = in->draft;
	in->draft = NULL; /* freed by the commit, whatever happens */
	return spool_draft_commit(in->spool, d);
}

/* Accepted already within the window: nothing to write (dedup.h). */
static bool
duplicate(struct intake *in)
{
	struct envelope *env = in->env;

	if (in->opts.dedup_window <= 0 || !in->own_msgid ||
	    env->message_id == NULL)
		return false;
	switch (dedup_find(
	    in->spool, env, in->opts.dedup_window, time(NULL), in->dup_of)) {
	case 1:
		return true;
	case -1:
		log_warn("%s: cannot read the dedup index; queued", env->id);
		break;
	}
	in->dup_of[0] = '\0';
	return false;
}

int
intake_commit(struct intake *in)
{
	struct iovec *iov;
	int n, rc;

	if (in->status != INTAKE_OK)
		arnie_panic("intake_commit: a refused message");
	if (duplicate(in)) {
		spool_draft_abort(in->spool, in->draft);
		in->draft = NULL;
		return 0;
	}
	if (in->draft != NULL)
		return finish_draft(in);
	n = message_iovcnt(&in->fix) + 1;
	iov = xreallocarray(NULL, (size_t)n, sizeof(*iov));
	iov[0].iov_base = in->received;
	iov[0].iov_len = strlen(in->received);
	if ((n = message_iov(&in->fix, in->buf != NULL ? in->buf : "", in->len,
	         iov + 1, n - 1)) < 0)
		arnie_panic("message_iov: iovec array too small");
	rc = spool_write(in->spool, in->env, iov, n + 1);
	free(iov);
	return rc;
}

const char *
intake_duplicate_of(const struct intake *in)
{
	return in->dup_of[0] != '\0' ? in->dup_of : NULL;
}

void
intake_committed(struct intake *in)
{
	if (in->opts.dedup_window <= 0 || !in->own_msgid ||
	    in->dup_of[0] != '\0' || in->env->message_id == NULL)
		return;
	if (dedup_record(in->spool, in->env) == -1)
		log_warn(
		    "%s: cannot record it in the dedup index", in->env->id);
}

const char *
intake_refusal(const struct intake *in)
{
	return in->refusal != NULL ? in->refusal : "";
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
	free(in->refusal);
	free(in);
}
