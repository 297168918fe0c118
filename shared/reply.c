/*
 * reply: see reply.h.  The rules are in one function, in the order they
 * are checked; the table test lists the cases they were written for.
 */
#include "autoconf.h"

#include "reply.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum reply_class
reply_classify(int code, const char *text, enum reply_stage stage)
{
	(void)text;
	if (code == 0)
		return REPLY_NONE;
	/* RFC 5321 4.2: three digits, the first 2 to 5. */
	if (code < 200 || code > 599)
		return REPLY_MALFORMED;
	/* 354 is the expected answer to DATA; elsewhere a 3xx is no answer
	 * the client asked for. */
	if (code / 100 == 3)
		return stage == REPLY_AT_DATA && code == 354 ? REPLY_OK
		                                             : REPLY_MALFORMED;
	if (code / 100 == 2)
		return REPLY_OK;
	/* Before any message, a refusal is about the session. */
	if (stage == REPLY_AT_SESSION)
		return REPLY_TEMP_QUEUE;
	switch (code) {
	case 421: /* service closing */
	case 454: /* TLS unavailable; SES throttling, also after DATA */
	case 530: /* authentication required */
	case 534: /* mechanism too weak */
	case 535: /* credentials refused */
	case 538: /* encryption required */
		return REPLY_TEMP_QUEUE;
	}
	return code / 100 == 4 ? REPLY_TEMP : REPLY_PERM;
}

bool
reply_is_queue_wide(enum reply_class c)
{
	return c == REPLY_TEMP_QUEUE || c == REPLY_MALFORMED;
}

bool
reply_line_ok(const char *line, size_t len)
{
	return len >= 3 && line[0] >= '2' && line[0] <= '5' &&
	       isdigit((unsigned char)line[1]) &&
	       isdigit((unsigned char)line[2]) &&
	       (len == 3 || line[3] == ' ' || line[3] == '-');
}

const char *
reply_class_name(enum reply_class c)
{
	switch (c) {
	case REPLY_OK:
		return "ok";
	case REPLY_TEMP:
		return "temp";
	case REPLY_TEMP_QUEUE:
		return "temp-queue";
	case REPLY_PERM:
		return "perm";
	case REPLY_MALFORMED:
		return "malformed";
	case REPLY_NONE:
		return "none";
	}
	return "?";
}

/* The word at p (up to a blank, ';', ',' or the end of the line). */
static bool
take_word(const char *p, char *out, size_t len)
{
	size_t n = strcspn(p, " \t\r\n;,");

	if (n == 0 || len == 0)
		return false;
	snprintf(out, len, "%.*s", (int)n, p);
	return true;
}

bool
reply_queued_as(const char *reply, char *out, size_t len)
{
	const char *p;

	if (len > 0)
		out[0] = '\0';
	if (reply == NULL || strncmp(reply, "250", 3) != 0)
		return false;
	if ((p = strcasestr(reply, "queued as ")) != NULL)
		return take_word(p + 10, out, len);
	/* "250 Ok ID", with or without an enhanced code. */
	p = reply + 3;
	p += strspn(p, " -");
	if (p[0] == '2' && p[1] == '.')
		p += strcspn(p, " ") + strspn(p + strcspn(p, " "), " ");
	if (strncasecmp(p, "ok ", 3) != 0)
		return false;
	p += 3 + strspn(p + 3, " ");
	/* A word of some length, alone on its line: an ID, not prose. */
	if (strcspn(p, " \t\r\n") < 8 || p[strcspn(p, " \t")] == ' ')
		return false;
	return take_word(p, out, len);
}

/* The first reply code in text, or 0. */
static int
first_code(const char *text)
{
	const char *p;

	for (p = text; *p != '\0'; p++)
		if (p[0] >= '2' && p[0] <= '5' &&
		    isdigit((unsigned char)p[1]) &&
		    isdigit((unsigned char)p[2]) &&
		    (p == text || p[-1] == ' ' || p[-1] == ':') &&
		    (p[3] == ' ' || p[3] == '-' || p[3] == '\0'))
			return (p[0] - '0') * 100 + (p[1] - '0') * 10 +
			       (p[2] - '0');
	return 0;
}

/* Words an upstream uses when it slows us down. */
static bool
throttling(const char *text)
{
	static const char *const words[] = {
	    "throttl", "rate limit", "sending rate", "too many", "slow down"};
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(text, words[i]) != NULL)
			return true;
	return false;
}

const char *
reply_trouble_kind(const char *reason)
{
	int code;

	if (reason == NULL)
		return "other";
	if (strncmp(reason, "TLS ", 4) == 0 || strstr(reason, "STARTTLS"))
		return "tls";
	if (strncmp(reason, "AUTH ", 5) == 0)
		return "auth";
	if (strncmp(reason, "cannot connect", 14) == 0 ||
	    strncmp(reason, "connection to ", 14) == 0)
		return "unreachable";
	code = first_code(reason);
	if (code == 530 || code == 534 || code == 535 || code == 538)
		return "auth";
	if (code == 454 || (code / 100 == 4 && throttling(reason)))
		return "throttled";
	if (code >= 400 || strncmp(reason, "upstream refused", 16) == 0)
		return "refused";
	return "other";
}
