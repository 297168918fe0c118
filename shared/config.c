/*
 * config: see config.h.  Reads a .env file (dotenv.h), overlays the
 * process environment for the keys Arnie knows, applies the defaults and
 * checks every value strictly.
 *
 * It never exits, never logs and never copies the password into a message:
 * errors go back to the caller as one line naming the key (and, for a value
 * from the file, the file and line).  The password, and every value read
 * from the file (which holds it too), is wiped before its memory is freed.
 */
#include "autoconf.h"

#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dotenv.h"
#include "secret.h"
#include "timefmt.h"
#include "xmalloc.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef SPOOLDIR
#define SPOOLDIR "/var/spool/arnie"
#endif
#ifndef ARNIE_RELAY_PATH
#define ARNIE_RELAY_PATH "/usr/libexec/arnie/arnie-relay"
#endif

/* A .env holds a few dozen lines; anything this big is the wrong file. */
/* Passwords and API tokens are short; this bounds the read. */
#define PASSWORD_FILE_MAX 4096
/* How much of a bad value an error message quotes. */
#define ECHO_MAX 64

enum ktype {
	KT_STRING,
	KT_SECRET, /* never echoed, not checked for content */
	KT_BOOL,
	KT_INT,
	KT_LONG,
	KT_SIZE,
	KT_RATE,
	KT_MODE,
	KT_LOGFMT,
	KT_DURATION, /* "90s", "15m", "2h", "1d" into a long of seconds */
};

typedef int check_fn(
    const char *key, const char *value, char *err, size_t errlen);

struct keydef {
	const char *name;
	enum ktype type;
	size_t off;         /* into struct config */
	const char *def;    /* default as text; NULL: unset */
	long long min, max; /* numbers only */
	check_fn *check;    /* extra test for strings */
	bool required;
};

static check_fn check_host, check_hostname, check_address, check_ip,
    check_milter_socket, check_user, check_listen, check_command;

#define OFF(f) offsetof(struct config, f)
#define DAY 86400LL
#define YEAR (365 * DAY)

/*
 * Every key Arnie reads, in the order config_print() shows them.  Defaults
 * that depend on other keys or on the host (ARNIE_HOSTNAME, REPORT_FROM)
 * are filled in by finish().
 */
/* clang-format off */
static const struct keydef keys[] = {
	{ "OUTBOUND_EMAIL_HOST", KT_STRING, OFF(outbound_host), NULL, 0, 0,
	    check_host, true },
	{ "OUTBOUND_EMAIL_HOST_PORT", KT_INT, OFF(outbound_port), "587", 1,
	    65535, NULL, false },
	{ "OUTBOUND_EMAIL_USE_TLS", KT_BOOL, OFF(use_tls), "true", 0, 0, NULL,
	    false },
	{ "OUTBOUND_EMAIL_TLS_VERIFY", KT_BOOL, OFF(tls_verify), "true", 0, 0,
	    NULL, false },
	{ "OUTBOUND_EMAIL_CA_FILE", KT_STRING, OFF(ca_file), NULL, 0, 0, NULL,
	    false },
	{ "OUTBOUND_EMAIL_USERNAME", KT_STRING, OFF(username), NULL, 0, 0,
	    NULL, false },
	{ "OUTBOUND_EMAIL_PASSWORD", KT_SECRET, OFF(password), NULL, 0, 0,
	    NULL, false },
	{ "OUTBOUND_EMAIL_PASSWORD_FILE", KT_STRING, OFF(password_file), NULL,
	    0, 0, NULL, false },
	{ "OUTBOUND_EMAIL_TIMEOUT_SECONDS", KT_LONG, OFF(send_timeout), "60",
	    1, DAY, NULL, false },
	{ "FALLBACK_EMAIL_HOST", KT_STRING, OFF(fb_host), NULL, 0, 0,
	    check_host, false },
	{ "FALLBACK_EMAIL_HOST_PORT", KT_INT, OFF(fb_port), "587", 1, 65535,
	    NULL, false },
	{ "FALLBACK_EMAIL_USE_TLS", KT_BOOL, OFF(fb_use_tls), "true", 0, 0,
	    NULL, false },
	{ "FALLBACK_EMAIL_TLS_VERIFY", KT_BOOL, OFF(fb_tls_verify), "true", 0,
	    0, NULL, false },
	{ "FALLBACK_EMAIL_CA_FILE", KT_STRING, OFF(fb_ca_file), NULL, 0, 0,
	    NULL, false },
	{ "FALLBACK_EMAIL_USERNAME", KT_STRING, OFF(fb_username), NULL, 0, 0,
	    NULL, false },
	{ "FALLBACK_EMAIL_PASSWORD", KT_SECRET, OFF(fb_password), NULL, 0, 0,
	    NULL, false },
	{ "FALLBACK_EMAIL_PASSWORD_FILE", KT_STRING, OFF(fb_password_file),
	    NULL, 0, 0, NULL, false },
	{ "FALLBACK_AFTER_SECONDS", KT_LONG, OFF(fallback_after), "300", 0,
	    YEAR, NULL, false },
	{ "ARNIE_HOSTNAME", KT_STRING, OFF(helo_name), NULL, 0, 0,
	    check_hostname, false },
	{ "ADMIN_ADDRESS", KT_STRING, OFF(admin_address), NULL, 0, 0,
	    check_address, false },
	{ "REPORT_FROM", KT_STRING, OFF(report_from), NULL, 0, 0,
	    check_address, false },
	{ "REPORT_INTERVAL_SECONDS", KT_LONG, OFF(report_interval), "3600", 1,
	    YEAR, NULL, false },
	{ "FILES_DIRECTORY", KT_STRING, OFF(files_directory),
	    SPOOLDIR, 0, 0, NULL, false },
	{ "SAVE_SENT_MAIL", KT_BOOL, OFF(save_sent_mail), "false", 0, 0, NULL,
	    false },
	{ "SENT_RETENTION_DAYS", KT_INT, OFF(sent_retention_days), "0", 0,
	    36500, NULL, false },
	{ "ARNIE_LISTEN_ADDRESS", KT_STRING, OFF(listen_address), "127.0.0.1",
	    0, 0, check_ip, false },
	{ "ARNIE_LISTEN_PORT", KT_INT, OFF(listen_port), "8025", 1, 65535,
	    NULL, false },
	{ "MAX_MESSAGE_SIZE", KT_SIZE, OFF(max_message_size), "26214400", 1,
	    INT_MAX, NULL, false },
	{ "MAX_RECIPIENTS", KT_INT, OFF(max_recipients), "100", 1, 100000,
	    NULL, false },
	{ "MAX_CONNECTIONS", KT_INT, OFF(max_connections), "100", 1, 100000,
	    NULL, false },
	{ "ARNIE_SMTP_TIMEOUT_SECONDS", KT_LONG, OFF(smtp_timeout), "300", 1,
	    DAY, NULL, false },
	{ "ARNIE_SMTP_MIN_DATA_RATE", KT_LONG, OFF(smtp_min_data_rate), "500",
	    0, 1000000000, NULL, false },
	{ "REMOVE_BCC_HEADERS", KT_BOOL, OFF(remove_bcc), "true", 0, 0, NULL,
	    false },
	{ "RETRY_DELAY_SECONDS", KT_LONG, OFF(retry_delay), "60", 1, 7 * DAY,
	    NULL, false },
	{ "RETRY_MAX_DELAY_SECONDS", KT_LONG, OFF(retry_max_delay), "3600", 1,
	    7 * DAY, NULL, false },
	{ "MAX_SEND_ATTEMPTS", KT_INT, OFF(max_send_attempts), "50", 1,
	    100000, NULL, false },
	{ "MAX_QUEUE_LIFETIME_SECONDS", KT_LONG, OFF(max_queue_lifetime),
	    "432000", 1, YEAR, NULL, false },
	{ "DEFAULT_EXPIRE_AFTER", KT_DURATION, OFF(default_expire), NULL, 0,
	    0, NULL, false },
	{ "DEDUP_WINDOW_SECONDS", KT_LONG, OFF(dedup_window), "0", 0,
	    30 * DAY, NULL, false },
	{ "OUTCOME_COMMAND", KT_STRING, OFF(outcome_command), NULL, 0, 0,
	    check_command, false },
	{ "OUTCOME_COMMAND_TIMEOUT_SECONDS", KT_LONG, OFF(outcome_timeout),
	    "10", 1, 3600, NULL, false },
	{ "ALERT_COMMAND", KT_STRING, OFF(alert_command), NULL, 0, 0,
	    check_command, false },
	{ "ALERT_COMMAND_TIMEOUT_SECONDS", KT_LONG, OFF(alert_timeout), "10",
	    1, 3600, NULL, false },
	{ "ALERT_AFTER_SECONDS", KT_LONG, OFF(alert_after), "300", 0, YEAR,
	    NULL, false },
	{ "ALERT_QUEUE_AGE_SECONDS", KT_LONG, OFF(alert_queue_age), "3600", 0,
	    YEAR, NULL, false },
	{ "MAX_SEND_RATE", KT_RATE, OFF(max_send_rate), "0", 0, 1000000, NULL,
	    false },
	{ "ARNIE_MAX_BATCH", KT_INT, OFF(max_batch), "100", 1, 10000, NULL,
	    false },
	{ "ARNIE_MILTER_SOCKET", KT_STRING, OFF(milter_socket),
	    "inet:8026@127.0.0.1", 0, 0, check_milter_socket, false },
	{ "ARNIE_MILTER_MODE", KT_MODE, OFF(milter_mode), "divert", 0, 0, NULL,
	    false },
	{ "ARNIE_LOG_FILE", KT_STRING, OFF(log_file), NULL, 0, 0, NULL,
	    false },
	{ "ARNIE_LOG_FORMAT", KT_LOGFMT, OFF(log_json), "text", 0, 0, NULL,
	    false },
	{ "ARNIE_USER", KT_STRING, OFF(user), "arnie", 0, 0, check_user,
	    false },
	{ "ARNIE_RELAY_PROGRAM", KT_STRING, OFF(relay_program),
	    ARNIE_RELAY_PATH, 0, 0, NULL, false },
	{ "ARNIE_RELAY_IDLE_SECONDS", KT_LONG, OFF(relay_idle), "60", 0, DAY,
	    NULL, false },
	{ "ARNIE_METRICS_LISTEN", KT_STRING, OFF(metrics_listen), NULL, 0, 0,
	    check_listen, false },
	{ "HEALTH_MAX_PAUSE_SECONDS", KT_LONG, OFF(health_max_pause), "600",
	    0, YEAR, NULL, false },
	{ "HEALTH_MAX_QUEUE_AGE_SECONDS", KT_LONG, OFF(health_max_queue_age),
	    "3600", 0, YEAR, NULL, false },
};
/* clang-format on */
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Append " (where)" to an error already in err, if it fits. */
static void adderr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
adderr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (err == NULL || errlen == 0)
		return;
	n = strlen(err);
	if (n + 1 >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
}

/*
 * A bad value quoted in an error: control characters (a quoted value may
 * hold newlines) become '?' so the message stays one line, and a long value
 * is cut, since the message is for a human reading a log.
 */
static const char *
echo(const char *value, char *buf, size_t len)
{
	size_t i, n = 0;

	for (i = 0; value[i] != '\0' && n + 4 < len && i < ECHO_MAX; i++) {
		unsigned char c = (unsigned char)value[i];
		buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (value[i] != '\0') {
		buf[n++] = '.';
		buf[n++] = '.';
		buf[n++] = '.';
	}
	buf[n] = '\0';
	return buf;
}

static bool
has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static const struct keydef *find_key(const char *name);

/* dotenv_known_fn: may a parse error name this key? */
static bool
is_key(const char *name)
{
	return find_key(name) != NULL;
}

static const struct keydef *
find_key(const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Warn once for each key of the file Arnie does not read. */
static void
warn_unknown(const struct dotenv *ef, config_warn_fn *warn)
{
	char msg[512];
	size_t i, j;

	if (warn == NULL)
		return;
	for (i = 0; i < ef->n; i++) {
		if (find_key(ef->v[i].key) != NULL)
			continue;
		for (j = 0; j < i; j++)
			if (strcmp(ef->v[j].key, ef->v[i].key) == 0)
				break;
		if (j < i)
			continue;
		snprintf(msg, sizeof(msg), "unknown key %s in %s line %d",
		    ef->v[i].key, ef->path, ef->v[i].line);
		warn(msg);
	}
}

/* Does the file itself give key a value (the environment aside)? */
static bool
file_sets(const struct dotenv *ef, const char *key)
{
	const char *v = dotenv_get(ef, key, NULL);

	return v != NULL && v[0] != '\0';
}

/*
 * A file holding the password that every local user can read: worth one
 * warning at start-up, naming the file, its mode and the fix (the daemon
 * reads it as root or as ARNIE_USER; nobody else needs to).
 */
static void
warn_readable(
    config_warn_fn *warn, const char *path, mode_t mode, const char *what)
{
	char msg[PATH_MAX + 200];

	if (warn == NULL || !(mode & S_IROTH))
		return;
	snprintf(msg, sizeof(msg),
	    "%s %s and every user can read it (mode %04o): chmod o-r %s", path,
	    what, (unsigned)(mode & 07777), path);
	warn(msg);
}

/*
 * The raw text for a key: the environment wins, as with python-dotenv;
 * then the last occurrence in the file.  *line tells where a file value
 * came from (0 when it came from the environment or nowhere).
 */
static const char *
lookup(const struct dotenv *ef, const char *name, int *line)
{
	const char *v;

	*line = 0;
	if ((v = getenv(name)) != NULL)
		return v;
	return dotenv_get(ef, name, line);
}

/* ------------------------------------------------------------ values */

int
config_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"true", "1", "yes", "on"};
	static const char *const no[] = {"false", "0", "no", "off"};
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* Digits only (a leading '-' is let through to be told "out of range"). */
static int
parse_whole(const struct keydef *kd, const char *text, long long *out,
    char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *d = text[0] == '-' ? text + 1 : text;
	char *end;
	long long v;

	if (!isdigit((unsigned char)*d)) {
		seterr(err, errlen, "%s: '%s' is not a whole number", kd->name,
		    echo(text, buf, sizeof(buf)));
		return -1;
	}
	errno = 0;
	v = strtoll(text, &end, 10);
	if (*end != '\0') {
		seterr(err, errlen, "%s: '%s' is not a whole number", kd->name,
		    echo(text, buf, sizeof(buf)));
		return -1;
	}
	if (errno == ERANGE || v < kd->min || v > kd->max) {
		seterr(err, errlen, "%s: '%s' is out of range (%lld to %lld)",
		    kd->name, echo(text, buf, sizeof(buf)), kd->min, kd->max);
		return -1;
	}
	*out = v;
	return 0;
}

/*
 * A plain decimal: digits with at most one '.'.  strtod alone would also
 * take "inf", "nan", hex and exponents, which no one means here.
 */
static int
parse_rate(const struct keydef *kd, const char *text, double *out, char *err,
    size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *s;
	int digits = 0, dots = 0;
	char *end;
	double v;

	for (s = text; *s != '\0'; s++) {
		if (isdigit((unsigned char)*s))
			digits++;
		else if (*s == '.')
			dots++;
		else
			break;
	}
	if (*s != '\0' || digits == 0 || dots > 1)
		goto bad;
	errno = 0;
	v = strtod(text, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v))
		goto bad;
	if (v > (double)kd->max) {
		seterr(err, errlen, "%s: '%s' is out of range (0 to %lld)",
		    kd->name, echo(text, buf, sizeof(buf)), kd->max);
		return -1;
	}
	*out = v;
	return 0;
bad:
	seterr(err, errlen,
	    "%s: '%s' is not a non-negative decimal number "
	    "(messages per second, 0 = unlimited)",
	    kd->name, echo(text, buf, sizeof(buf)));
	return -1;
}

/* Store text (never NULL, never empty) into the field kd describes. */
static int
set_value(struct config *cfg, const struct keydef *kd, const char *text,
    char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	char *field = (char *)cfg + kd->off;
	long long n;
	bool b;

	switch (kd->type) {
	case KT_SECRET:
		/* Kept where a core dump does not look (secret.h). */
		*(char **)field = secret_strdup(text);
		return 0;
	case KT_STRING:
		if (has_control(text)) {
			seterr(err, errlen,
			    "%s: '%s' contains a control "
			    "character",
			    kd->name, echo(text, buf, sizeof(buf)));
			return -1;
		}
		if (kd->check != NULL &&
		    kd->check(kd->name, text, err, errlen) == -1)
			return -1;
		*(char **)field = xstrdup(text);
		return 0;
	case KT_BOOL:
		if (config_parse_bool(text, &b) == -1) {
			seterr(err, errlen,
			    "%s: '%s' is not a boolean (use "
			    "true/false, yes/no, on/off or 1/0)",
			    kd->name, echo(text, buf, sizeof(buf)));
			return -1;
		}
		*(bool *)field = b;
		return 0;
	case KT_INT:
	case KT_LONG:
	case KT_SIZE:
		if (parse_whole(kd, text, &n, err, errlen) == -1)
			return -1;
		if (kd->type == KT_INT)
			*(int *)field = (int)n;
		else if (kd->type == KT_LONG)
			*(long *)field = (long)n;
		else
			*(size_t *)field = (size_t)n;
		return 0;
	case KT_RATE:
		return parse_rate(kd, text, (double *)field, err, errlen);
	case KT_MODE:
		if (strcasecmp(text, "divert") == 0)
			*(enum milter_mode *)field = MILTER_DIVERT;
		else if (strcasecmp(text, "copy") == 0)
			*(enum milter_mode *)field = MILTER_COPY;
		else {
			seterr(err, errlen,
			    "%s: '%s' is not a mode (use "
			    "divert or copy)",
			    kd->name, echo(text, buf, sizeof(buf)));
			return -1;
		}
		return 0;
	case KT_DURATION:
		if (timefmt_parse_duration(text, (long *)field) == -1) {
			seterr(err, errlen,
			    "%s: '%s' is not a duration (a number and s, m, h "
			    "or d: 90s, 15m, 2h, 1d)",
			    kd->name, echo(text, buf, sizeof(buf)));
			return -1;
		}
		return 0;
	case KT_LOGFMT:
		if (strcasecmp(text, "text") == 0)
			*(bool *)field = false;
		else if (strcasecmp(text, "json") == 0)
			*(bool *)field = true;
		else {
			seterr(err, errlen,
			    "%s: '%s' is not a log format (use text or json)",
			    kd->name, echo(text, buf, sizeof(buf)));
			return -1;
		}
		return 0;
	}
	arnie_panic("config: key %s has no type", kd->name);
}

static int
check_host(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *colon = strchr(value, ':');

	if (strpbrk(value, " \t/@") != NULL) {
		seterr(err, errlen, "%s: '%s' is not a host name", key,
		    echo(value, buf, sizeof(buf)));
		return -1;
	}
	/* One colon is "host:port", a common slip; IPv6 has several. */
	if (colon != NULL && strchr(colon + 1, ':') == NULL) {
		seterr(err, errlen,
		    "%s: '%s' looks like host:port; put the "
		    "port in OUTBOUND_EMAIL_HOST_PORT",
		    key, echo(value, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

/* The name Arnie gives in EHLO and its Received: header. */
static int
check_hostname(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *s;

	if (value[0] == '[' && value[strlen(value) - 1] == ']')
		return 0;
	for (s = value; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' &&
		    *s != '_')
			break;
	if (*s != '\0' || value[0] == '.' || value[0] == '-') {
		seterr(err, errlen, "%s: '%s' is not a host name", key,
		    echo(value, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

/* Only what would break an SMTP command: a full parser is not the point. */
static int
check_address(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *at = strrchr(value, '@');

	if (at == NULL || at == value || at[1] == '\0' ||
	    strpbrk(value, " \t<>") != NULL) {
		seterr(err, errlen,
		    "%s: '%s' is not a mail address "
		    "(user@domain)",
		    key, echo(value, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

static int
check_ip(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	unsigned char addr[sizeof(struct in6_addr)];

	if (inet_pton(AF_INET, value, addr) == 1 ||
	    inet_pton(AF_INET6, value, addr) == 1)
		return 0;
	seterr(err, errlen, "%s: '%s' is not an IPv4 or IPv6 address", key,
	    echo(value, buf, sizeof(buf)));
	return -1;
}

int
config_split_listen(const char *text, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(text, ':'), *p;
	unsigned char addr[sizeof(struct in6_addr)];
	char *end;
	long n;
	size_t len;

	if (colon == NULL) {
		snprintf(host, hostlen, "127.0.0.1");
		p = text;
	} else {
		len = (size_t)(colon - text);
		if (text[0] == '[' && len >= 2 && text[len - 1] == ']') {
			text++;
			len -= 2;
		} else if (memchr(text, ':', len) != NULL)
			return -1; /* IPv6 without brackets: ambiguous */
		if (len == 0 || len >= hostlen)
			return -1;
		memcpy(host, text, len);
		host[len] = '\0';
		if (inet_pton(AF_INET, host, addr) != 1 &&
		    inet_pton(AF_INET6, host, addr) != 1)
			return -1;
		p = colon + 1;
	}
	errno = 0;
	n = strtol(p, &end, 10);
	if (*p == '\0' || *end != '\0' || errno != 0 || n < 1 || n > 65535)
		return -1;
	*port = (int)n;
	return 0;
}

/* A program run without a shell: its absolute path, then arguments. */
static int
check_command(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *p;
	int words = 0;

	for (p = value; *p != '\0'; p++)
		if (*p != ' ' && *p != '\t' &&
		    (p == value || p[-1] == ' ' || p[-1] == '\t'))
			words++;
	if (value[0] == '/' && words <= 32)
		return 0;
	seterr(err, errlen,
	    value[0] == '/' ? "%s: '%s' has more than 32 words"
	                    : "%s: '%s' does not start with an absolute path "
	                      "(it is run without a shell)",
	    key, echo(value, buf, sizeof(buf)));
	return -1;
}

static int
check_listen(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8], host[INET6_ADDRSTRLEN];
	int port;

	if (config_split_listen(value, host, sizeof(host), &port) == 0)
		return 0;
	seterr(err, errlen,
	    "%s: '%s' is not [ADDRESS:]PORT (e.g. 127.0.0.1:9025)", key,
	    echo(value, buf, sizeof(buf)));
	return -1;
}

/* The forms smfi_setconn() takes. */
static int
check_milter_socket(
    const char *key, const char *value, char *err, size_t errlen)
{
	static const char *const prefix[] = {
	    "inet:", "inet6:", "unix:", "local:"};
	char buf[ECHO_MAX + 8];
	size_t i, n;

	if (value[0] == '/')
		return 0;
	for (i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++) {
		n = strlen(prefix[i]);
		if (strncmp(value, prefix[i], n) == 0 && value[n] != '\0')
			return 0;
	}
	seterr(err, errlen,
	    "%s: '%s' is not a milter socket (use "
	    "inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH)",
	    key, echo(value, buf, sizeof(buf)));
	return -1;
}

/* A user name as useradd takes it; whether it exists is the daemon's
 * business at start-up (daemon.h), not the configuration's. */
static int
check_user(const char *key, const char *value, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *s;

	for (s = value; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' &&
		    *s != '.')
			break;
	if (*s != '\0' || value[0] == '-' || strlen(value) > 32) {
		seterr(err, errlen, "%s: '%s' is not a user name", key,
		    echo(value, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ cross-key */

/* "~" and "~/..." become $HOME (or the user's home from passwd). */
static int
expand_files_directory(struct config *cfg, char *err, size_t errlen)
{
	char buf[ECHO_MAX + 8];
	const char *dir = cfg->files_directory, *home;
	struct passwd *pw;
	char *full;
	size_t n;

	if (dir[0] == '~') {
		if (dir[1] != '\0' && dir[1] != '/') {
			seterr(err, errlen,
			    "FILES_DIRECTORY: '%s': only ~ "
			    "and ~/ are expanded, not ~user",
			    echo(dir, buf, sizeof(buf)));
			return -1;
		}
		home = getenv("HOME");
		if ((home == NULL || home[0] == '\0') &&
		    (pw = getpwuid(getuid())) != NULL)
			home = pw->pw_dir;
		if (home == NULL || home[0] == '\0') {
			seterr(err, errlen,
			    "FILES_DIRECTORY: '%s': HOME is "
			    "not set",
			    echo(dir, buf, sizeof(buf)));
			return -1;
		}
		full = xasprintf("%s%s", home, dir + 1);
		free(cfg->files_directory);
		cfg->files_directory = full;
	}
	/* No trailing slash, so the spool path has no "//". */
	n = strlen(cfg->files_directory);
	while (n > 1 && cfg->files_directory[n - 1] == '/')
		cfg->files_directory[--n] = '\0';
	cfg->spool_directory = xasprintf("%s%s",
	    n == 1 && cfg->files_directory[0] == '/' ? ""
	                                             : cfg->files_directory,
	    "/arniefiles");
	if (strlen(cfg->spool_directory) + 64 > PATH_MAX) {
		seterr(err, errlen, "FILES_DIRECTORY: '%s' is too long",
		    echo(cfg->files_directory, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

static int
read_password_file(const char *key, const char *path, char **dest,
    config_warn_fn *warn, char *err, size_t errlen)
{
	char buf[PASSWORD_FILE_MAX + 1], what[64];
	struct stat sb;
	size_t len = 0;
	ssize_t r;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		seterr(err, errlen, "%s: cannot read %s: %s", key, path,
		    strerror(errno));
		return -1;
	}
	snprintf(what, sizeof(what), "is %s", key);
	if (fstat(fd, &sb) == 0)
		warn_readable(warn, path, sb.st_mode, what);
	while (len < sizeof(buf)) {
		r = read(fd, buf + len, sizeof(buf) - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			seterr(err, errlen, "%s: cannot read %s: %s", key, path,
			    strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > PASSWORD_FILE_MAX) {
		seterr(err, errlen, "%s: %s is larger than %d bytes", key, path,
		    PASSWORD_FILE_MAX);
		goto out;
	}
	/* Editors and "echo secret > file" add a line end. */
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (memchr(buf, '\0', len) != NULL) {
		seterr(err, errlen, "%s: %s contains a NUL byte", key, path);
		goto out;
	}
	if (len > 0)
		*dest = secret_strndup(buf, len);
	rc = 0;
out:
	explicit_bzero(buf, sizeof(buf));
	close(fd);
	return rc;
}

/* One upstream's settings, the primary's or the fallback's. */
struct upstream_keys {
	const char *prefix; /* "OUTBOUND_EMAIL", "FALLBACK_EMAIL" */
	int port;
	const char *ca_file;
	char **password; /* read from password_file when it is set */
	const char *password_file;
	const char *username;
};

/* Checked alike, the messages naming the upstream's own keys. */
static int
finish_upstream(const struct upstream_keys *u, config_warn_fn *warn, char *err,
    size_t errlen)
{
	const char *p = u->prefix;
	char key[64];
	int fd;

	if (u->port == 465) {
		seterr(err, errlen,
		    "%s_HOST_PORT: port 465 is implicit TLS (SMTPS), which "
		    "libesmtp does not support; use port 587 with STARTTLS "
		    "(%s_USE_TLS=true)",
		    p, p);
		return -1;
	}
	if (u->ca_file != NULL) {
		if ((fd = open(u->ca_file, O_RDONLY | O_CLOEXEC)) == -1) {
			seterr(err, errlen, "%s_CA_FILE: cannot read %s: %s", p,
			    u->ca_file, strerror(errno));
			return -1;
		}
		close(fd);
	}
	if (u->password_file != NULL) {
		if (*u->password != NULL) {
			seterr(err, errlen,
			    "%s_PASSWORD and %s_PASSWORD_FILE are both set; "
			    "use one of them",
			    p, p);
			return -1;
		}
		snprintf(key, sizeof(key), "%s_PASSWORD_FILE", p);
		if (read_password_file(key, u->password_file, u->password, warn,
		        err, errlen) == -1)
			return -1;
	}
	if ((u->username != NULL) != (*u->password != NULL)) {
		seterr(err, errlen,
		    u->username != NULL
		        ? "%s_USERNAME is set but %s_PASSWORD "
		          "is not: set both for AUTH, or neither"
		        : "%s_PASSWORD is set but %s_USERNAME "
		          "is not: set both for AUTH, or neither",
		    p, p);
		return -1;
	}
	return 0;
}

/* The fallback upstream's settings, checked as the primary's are. */
static int
finish_fallback(
    struct config *cfg, config_warn_fn *warn, char *err, size_t errlen)
{
	struct upstream_keys fallback;

	if (cfg->fb_host == NULL) {
		if (cfg->fb_username != NULL || cfg->fb_password != NULL ||
		    cfg->fb_password_file != NULL || cfg->fb_ca_file != NULL) {
			seterr(err, errlen,
			    "FALLBACK_EMAIL_* is set but FALLBACK_EMAIL_HOST "
			    "is not: name the fallback upstream, or unset "
			    "them");
			return -1;
		}
		return 0;
	}
	fallback.prefix = "FALLBACK_EMAIL";
	fallback.port = cfg->fb_port;
	fallback.ca_file = cfg->fb_ca_file;
	fallback.password = &cfg->fb_password;
	fallback.password_file = cfg->fb_password_file;
	fallback.username = cfg->fb_username;
	if (finish_upstream(&fallback, warn, err, errlen) == -1)
		return -1;
	if (cfg->fb_username != NULL && !cfg->fb_use_tls) {
		seterr(err, errlen,
		    "FALLBACK_EMAIL_USERNAME is set but FALLBACK_EMAIL_USE_TLS "
		    "is false: credentials are only sent over TLS");
		return -1;
	}
	return 0;
}

void
config_fallback_view(const struct config *cfg, struct config *view)
{
	*view = *cfg;
	view->outbound_host = cfg->fb_host;
	view->outbound_port = cfg->fb_port;
	view->use_tls = cfg->fb_use_tls;
	view->tls_verify = cfg->fb_tls_verify;
	view->ca_file = cfg->fb_ca_file;
	view->username = cfg->fb_username;
	view->password = cfg->fb_password;
	view->password_file = cfg->fb_password_file;
}

static int
finish(struct config *cfg, config_warn_fn *warn, char *err, size_t errlen)
{
	struct upstream_keys primary;
	char host[256];

	primary.prefix = "OUTBOUND_EMAIL";
	primary.port = cfg->outbound_port;
	primary.ca_file = cfg->ca_file;
	primary.password = &cfg->password;
	primary.password_file = cfg->password_file;
	primary.username = cfg->username;
	if (finish_upstream(&primary, warn, err, errlen) == -1)
		return -1;
	if (finish_fallback(cfg, warn, err, errlen) == -1)
		return -1;
	if (cfg->retry_max_delay < cfg->retry_delay) {
		seterr(err, errlen,
		    "RETRY_MAX_DELAY_SECONDS (%ld) is less "
		    "than RETRY_DELAY_SECONDS (%ld)",
		    cfg->retry_max_delay, cfg->retry_delay);
		return -1;
	}
	if (cfg->report_from == NULL && cfg->admin_address != NULL)
		cfg->report_from = xstrdup(cfg->admin_address);
	if (cfg->helo_name == NULL) {
		if (gethostname(host, sizeof(host)) == 0 && host[0] != '\0') {
			host[sizeof(host) - 1] = '\0';
			cfg->helo_name = xstrdup(host);
		} else
			cfg->helo_name = xstrdup("localhost");
	}
	return expand_files_directory(cfg, err, errlen);
}

/* ------------------------------------------------------------ public */

char *
config_find_file(const char *cli_path)
{
	char path[PATH_MAX];
	int n;

	/* Returned even if missing: config_load() then names the problem. */
	if (cli_path != NULL)
		return xstrdup(cli_path);
	if (access(".env", F_OK) == 0)
		return xstrdup(".env");
	n = snprintf(path, sizeof(path), "%s/arnie/arnie.env", SYSCONFDIR);
	if (n < 0 || (size_t)n >= sizeof(path))
		return NULL;
	if (access(path, F_OK) == 0)
		return xstrdup(path);
	return NULL;
}

struct config *
config_load(const char *path, config_warn_fn *warn, char *err, size_t errlen)
{
	struct dotenv ef = {0};
	struct config *cfg;
	const struct keydef *kd;
	const char *text;
	int line;
	size_t i;

	seterr(err, errlen, "%s", "");
	cfg = xcalloc(1, sizeof(*cfg));
	if (path != NULL) {
		cfg->path = xstrdup(path);
		if (dotenv_read(&ef, cfg->path, is_key, err, errlen) == -1)
			goto fail;
		warn_unknown(&ef, warn);
		if (file_sets(&ef, "OUTBOUND_EMAIL_PASSWORD"))
			warn_readable(warn, cfg->path, ef.mode,
			    "holds OUTBOUND_EMAIL_PASSWORD");
		else if (file_sets(&ef, "FALLBACK_EMAIL_PASSWORD"))
			warn_readable(warn, cfg->path, ef.mode,
			    "holds FALLBACK_EMAIL_PASSWORD");
	}
	for (i = 0; i < NKEYS; i++) {
		kd = &keys[i];
		text = lookup(&ef, kd->name, &line);
		if (text == NULL || text[0] == '\0') {
			if (kd->required) {
				seterr(err, errlen, "%s is not set", kd->name);
				goto fail;
			}
			if ((text = kd->def) == NULL)
				continue;
			line = 0;
		}
		if (set_value(cfg, kd, text, err, errlen) == -1) {
			if (line != 0)
				adderr(err, errlen, " (%s line %d)", ef.path,
				    line);
			else if (text != kd->def)
				adderr(err, errlen, " (from the environment)");
			goto fail;
		}
	}
	if (finish(cfg, warn, err, errlen) == -1)
		goto fail;
	dotenv_clear(&ef);
	return cfg;
fail:
	dotenv_clear(&ef);
	config_free(cfg);
	return NULL;
}

/* Values that the parser would not read back as they are get quoted. */
static void
print_value(FILE *out, const char *v)
{
	const char *s;

	for (s = v; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) &&
		    strchr("@%+,-./:=_~", *s) == NULL)
			break;
	if (*s == '\0') {
		fputs(v, out);
		return;
	}
	fputc('"', out);
	for (s = v; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

void
config_print(const struct config *cfg, FILE *out)
{
	const struct keydef *kd;
	const char *field;
	const char *s;
	size_t i;

	for (i = 0; i < NKEYS; i++) {
		kd = &keys[i];
		field = (const char *)cfg + kd->off;
		fprintf(out, "%s=", kd->name);
		switch (kd->type) {
		case KT_SECRET:
			if (*(char *const *)field != NULL)
				fputs("********", out);
			break;
		case KT_STRING:
			if ((s = *(char *const *)field) != NULL)
				print_value(out, s);
			break;
		case KT_BOOL:
			fputs(*(const bool *)field ? "true" : "false", out);
			break;
		case KT_INT:
			fprintf(out, "%d", *(const int *)field);
			break;
		case KT_LONG:
			fprintf(out, "%ld", *(const long *)field);
			break;
		case KT_SIZE:
			fprintf(out, "%zu", *(const size_t *)field);
			break;
		case KT_RATE:
			fprintf(out, "%g", *(const double *)field);
			break;
		case KT_MODE:
			fputs(*(const enum milter_mode *)field == MILTER_COPY
			          ? "copy"
			          : "divert",
			    out);
			break;
		case KT_LOGFMT:
			fputs(*(const bool *)field ? "json" : "text", out);
			break;
		case KT_DURATION:
			/* Unset prints empty, which reads back as unset. */
			if (*(const long *)field > 0)
				fprintf(out, "%lds", *(const long *)field);
			break;
		}
		fputc('\n', out);
	}
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->outbound_host);
	free(cfg->ca_file);
	free(cfg->username);
	secret_free(cfg->password);
	free(cfg->password_file);
	free(cfg->fb_host);
	free(cfg->fb_ca_file);
	free(cfg->fb_username);
	secret_free(cfg->fb_password);
	free(cfg->fb_password_file);
	free(cfg->helo_name);
	free(cfg->admin_address);
	free(cfg->report_from);
	free(cfg->files_directory);
	free(cfg->spool_directory);
	free(cfg->listen_address);
	free(cfg->milter_socket);
	free(cfg->log_file);
	free(cfg->user);
	free(cfg->relay_program);
	free(cfg->metrics_listen);
	free(cfg->outcome_command);
	free(cfg->alert_command);
	free(cfg);
}
