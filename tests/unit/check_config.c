/*
 * check_config: unit tests for shared/config.c.
 *
 * Each test runs in a fresh mkdtemp directory (also the working directory
 * and $HOME) with every Arnie key removed from the environment, writes a
 * .env there and loads it through the public API.  Tables hold the cases;
 * Check's loop tests report each row on its own.
 */
#include "autoconf.h"

#include "config.h"
#include "scratch.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

#define SECRET "S3cr3t-Pa55w0rd"
#define HOSTLINE "OUTBOUND_EMAIL_HOST=smtp.example.com\n"

/* Every key, in config_print() order: the documented list. */
static const char *const all_keys[] = {
    "OUTBOUND_EMAIL_HOST",
    "OUTBOUND_EMAIL_HOST_PORT",
    "OUTBOUND_EMAIL_USE_TLS",
    "OUTBOUND_EMAIL_TLS_VERIFY",
    "OUTBOUND_EMAIL_CA_FILE",
    "OUTBOUND_EMAIL_USERNAME",
    "OUTBOUND_EMAIL_PASSWORD",
    "OUTBOUND_EMAIL_PASSWORD_FILE",
    "OUTBOUND_EMAIL_TIMEOUT_SECONDS",
    "FALLBACK_EMAIL_HOST",
    "FALLBACK_EMAIL_HOST_PORT",
    "FALLBACK_EMAIL_USE_TLS",
    "FALLBACK_EMAIL_TLS_VERIFY",
    "FALLBACK_EMAIL_CA_FILE",
    "FALLBACK_EMAIL_USERNAME",
    "FALLBACK_EMAIL_PASSWORD",
    "FALLBACK_EMAIL_PASSWORD_FILE",
    "FALLBACK_AFTER_SECONDS",
    "ARNIE_HOSTNAME",
    "ADMIN_ADDRESS",
    "REPORT_FROM",
    "REPORT_INTERVAL_SECONDS",
    "FILES_DIRECTORY",
    "SAVE_SENT_MAIL",
    "SENT_RETENTION_DAYS",
    "ARNIE_LISTEN_ADDRESS",
    "ARNIE_LISTEN_PORT",
    "MAX_MESSAGE_SIZE",
    "MAX_RECIPIENTS",
    "MAX_CONNECTIONS",
    "ARNIE_SMTP_TIMEOUT_SECONDS",
    "ARNIE_SMTP_MIN_DATA_RATE",
    "REMOVE_BCC_HEADERS",
    "RETRY_DELAY_SECONDS",
    "RETRY_MAX_DELAY_SECONDS",
    "MAX_SEND_ATTEMPTS",
    "MAX_QUEUE_LIFETIME_SECONDS",
    "DEFAULT_EXPIRE_AFTER",
    "DEDUP_WINDOW_SECONDS",
    "OUTCOME_COMMAND",
    "OUTCOME_COMMAND_TIMEOUT_SECONDS",
    "ALERT_COMMAND",
    "ALERT_COMMAND_TIMEOUT_SECONDS",
    "ALERT_AFTER_SECONDS",
    "ALERT_QUEUE_AGE_SECONDS",
    "MAX_SEND_RATE",
    "ARNIE_MAX_BATCH",
    "ARNIE_MILTER_SOCKET",
    "ARNIE_MILTER_MODE",
    "ARNIE_LOG_FILE",
    "ARNIE_LOG_FORMAT",
    "ARNIE_USER",
    "ARNIE_RELAY_PROGRAM",
    "ARNIE_RELAY_IDLE_SECONDS",
    "ARNIE_METRICS_LISTEN",
    "HEALTH_MAX_PAUSE_SECONDS",
    "HEALTH_MAX_QUEUE_AGE_SECONDS",
};
#define NKEYS (sizeof(all_keys) / sizeof(all_keys[0]))

static char tmpdir[256];
static char envpath[512];
static char err[512];
static char warnings[8][512];
static int nwarn;

static void
warn_cb(const char *message)
{
	if (nwarn < 8)
		snprintf(
		    warnings[nwarn], sizeof(warnings[nwarn]), "%s", message);
	nwarn++;
}

static void
setup(void)
{
	size_t i;

	scratch_make(tmpdir, sizeof(tmpdir), "/tmp/check_config.XXXXXX");
	snprintf(envpath, sizeof(envpath), "%s/arnie.env", tmpdir);
	ck_assert_int_eq(chdir(tmpdir), 0);
	for (i = 0; i < NKEYS; i++)
		unsetenv(all_keys[i]);
	unsetenv("ARNIE_TEST_UNKNOWN");
	setenv("HOME", tmpdir, 1);
	nwarn = 0;
	err[0] = '\0';
}

static void
teardown(void)
{
	(void)!chdir("/");
	scratch_remove(tmpdir);
}

/* Write name (relative to the test directory) with exactly these bytes,
 * mode 0600 as a secret's file should be (see test_readable_secrets). */
static void
write_file(const char *name, const char *content)
{
	FILE *f = fopen(name, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(content, f) >= 0 || content[0] == '\0', 1);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(name, 0600), 0);
}

static struct config *
load_text(const char *content)
{
	write_file(envpath, content);
	return config_load(envpath, warn_cb, err, sizeof(err));
}

static char *
print_config(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(f);
	config_print(cfg, f);
	ck_assert_int_eq(fclose(f), 0);
	return buf;
}

/* ------------------------------------------------------------ parsing */

/* Each text follows HOSTLINE and OUTBOUND_EMAIL_USERNAME=u; the password is
 * the one key taking any byte, so it shows what the parser produced. */
static const struct {
	const char *text;
	const char *want;
} parse_cases[] = {
    {"OUTBOUND_EMAIL_PASSWORD=plain\n", "plain"},
    {"OUTBOUND_EMAIL_PASSWORD = spaced  \n", "spaced"},
    {"\tOUTBOUND_EMAIL_PASSWORD\t=\tx y z\t\n", "x y z"},
    {"export OUTBOUND_EMAIL_PASSWORD=exported\n", "exported"},
    {"export\t OUTBOUND_EMAIL_PASSWORD = e2\n", "e2"},
    {"OUTBOUND_EMAIL_PASSWORD='lit # \\n \"x\"'\n", "lit # \\n \"x\""},
    {"OUTBOUND_EMAIL_PASSWORD=\"a\\nb\\\"c\\\\d\\te\"\n", "a\nb\"c\\d\te"},
    {"OUTBOUND_EMAIL_PASSWORD=\"keep \\q\"\n", "keep \\q"},
    {"OUTBOUND_EMAIL_PASSWORD=\"it's\"\n", "it's"},
    {"OUTBOUND_EMAIL_PASSWORD='say \"hi\"'\n", "say \"hi\""},
    {"OUTBOUND_EMAIL_PASSWORD=\"two\nlines\"\nADMIN_ADDRESS=a@b.example\n",
        "two\nlines"},
    {"OUTBOUND_EMAIL_PASSWORD=val # comment\n", "val"},
    {"OUTBOUND_EMAIL_PASSWORD=val\t# comment\n", "val"},
    {"OUTBOUND_EMAIL_PASSWORD=val#kept\n", "val#kept"},
    {"OUTBOUND_EMAIL_PASSWORD=\"q # in\" # comment\n", "q # in"},
    {"OUTBOUND_EMAIL_PASSWORD='s'   \n", "s"},
    {"OUTBOUND_EMAIL_PASSWORD=crlf\r\nADMIN_ADDRESS=a@b.example\r\n", "crlf"},
    {"# comment\n\n   \n  # indented\nOUTBOUND_EMAIL_PASSWORD=after\n",
        "after"},
    {"OUTBOUND_EMAIL_PASSWORD=first\nOUTBOUND_EMAIL_PASSWORD=second\n",
        "second"},
    {"OUTBOUND_EMAIL_PASSWORD=a=b=c\n", "a=b=c"},
    {"OUTBOUND_EMAIL_PASSWORD=no-final-newline", "no-final-newline"},
    {"OUTBOUND_EMAIL_PASSWORD=\"\"\nOUTBOUND_EMAIL_PASSWORD=\"x\"", "x"},
};

START_TEST(test_parse)
{
	char text[512];
	struct config *cfg;

	snprintf(text, sizeof(text), "%sOUTBOUND_EMAIL_USERNAME=u\n%s",
	    HOSTLINE, parse_cases[_i].text);
	cfg = load_text(text);
	ck_assert_msg(cfg != NULL, "case %d: %s", _i, err);
	ck_assert_str_eq(cfg->password, parse_cases[_i].want);
	ck_assert_str_eq(cfg->username, "u");
	ck_assert_str_eq(cfg->outbound_host, "smtp.example.com");
	ck_assert_int_eq(nwarn, 0);
	config_free(cfg);
}
END_TEST

/* Malformed lines; the text follows HOSTLINE (line 1). */
static const struct {
	const char *text;
	int line;
} bad_lines[] = {
    {"just words\n", 2},
    {"=value\n", 2},
    {"KEY value\n", 2},
    {"1KEY=x\n", 2},
    {"KEY\n", 2},
    {"export\n", 2},
    {"export =x\n", 2},
    {"# ok\n\nOUTBOUND_EMAIL_PASSWORD='" SECRET "\nmore\n", 4},
    {"OUTBOUND_EMAIL_PASSWORD=\"" SECRET "\n", 2},
    {"OUTBOUND_EMAIL_PASSWORD=\"" SECRET "\" junk\n", 2},
    {"OUTBOUND_EMAIL_PASSWORD='" SECRET "'x\n", 2},
    {"OUTBOUND_EMAIL_PASSWORD=\"a\\\"\n", 2},
    /* The tail of a wrapped password line is not echoed as a key. */
    {"OUTBOUND_EMAIL_PASSWORD=x\n" SECRET "\n", 3},
};

START_TEST(test_bad_line)
{
	char text[512], want[PATH_MAX + 32];

	snprintf(text, sizeof(text), "%s%s", HOSTLINE, bad_lines[_i].text);
	ck_assert_ptr_null(load_text(text));
	snprintf(
	    want, sizeof(want), "%s line %d:", envpath, bad_lines[_i].line);
	ck_assert_msg(strstr(err, want) != NULL, "case %d: '%s' lacks '%s'", _i,
	    err, want);
	ck_assert_ptr_null(strstr(err, SECRET));
	ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

/* ------------------------------------------------------------ values */

/* A bad value for each key: the error must name the key and echo the value
 * (control characters shown as '?'). */
static const struct {
	const char *key;
	const char *value;
	const char *echo; /* NULL: the value itself */
} bad_values[] = {
    {"OUTBOUND_EMAIL_HOST", "smtp.example.com:587", NULL},
    {"OUTBOUND_EMAIL_HOST", "two words", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "abc", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "0", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "65536", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "587x", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "-1", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", " 587", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "+587", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "5.87", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "99999999999999999999999", NULL},
    {"OUTBOUND_EMAIL_HOST_PORT", "465", NULL},
    {"OUTBOUND_EMAIL_USE_TLS", "maybe", NULL},
    {"OUTBOUND_EMAIL_TLS_VERIFY", "2", NULL},
    {"OUTBOUND_EMAIL_CA_FILE", "/nonexistent/ca.pem", NULL},
    {"OUTBOUND_EMAIL_PASSWORD_FILE", "/nonexistent/pw", NULL},
    {"OUTBOUND_EMAIL_TIMEOUT_SECONDS", "0", NULL},
    {"OUTBOUND_EMAIL_TIMEOUT_SECONDS", "1m", NULL},
    {"ARNIE_HOSTNAME", "bad host", NULL},
    {"ARNIE_HOSTNAME", "-dash", NULL},
    {"ADMIN_ADDRESS", "no-at-sign", NULL},
    {"ADMIN_ADDRESS", "<admin@example.com>", NULL},
    {"REPORT_FROM", "reports@", NULL},
    {"REPORT_INTERVAL_SECONDS", "0", NULL},
    {"REPORT_INTERVAL_SECONDS", "hourly", NULL},
    {"FILES_DIRECTORY", "~nobody/x", NULL},
    {"FILES_DIRECTORY", "tab\there", "tab?here"},
    {"SAVE_SENT_MAIL", "True!", NULL},
    {"ARNIE_LISTEN_ADDRESS", "localhost", NULL},
    {"ARNIE_LISTEN_ADDRESS", "300.1.2.3", NULL},
    {"ARNIE_LISTEN_PORT", "0", NULL},
    {"ARNIE_LISTEN_PORT", "70000", NULL},
    {"MAX_MESSAGE_SIZE", "25MB", NULL},
    {"MAX_MESSAGE_SIZE", "99999999999", NULL},
    {"MAX_RECIPIENTS", "abc", NULL},
    {"MAX_RECIPIENTS", "0", NULL},
    {"MAX_CONNECTIONS", "-5", NULL},
    {"ARNIE_SMTP_TIMEOUT_SECONDS", "0", NULL},
    {"ARNIE_SMTP_MIN_DATA_RATE", "-1", NULL},
    {"ARNIE_SMTP_MIN_DATA_RATE", "fast", NULL},
    {"REMOVE_BCC_HEADERS", "sometimes", NULL},
    {"RETRY_DELAY_SECONDS", "0", NULL},
    {"RETRY_DELAY_SECONDS", "1.5", NULL},
    {"RETRY_MAX_DELAY_SECONDS", "x", NULL},
    {"RETRY_MAX_DELAY_SECONDS", "30", NULL},
    {"MAX_SEND_ATTEMPTS", "0", NULL},
    {"MAX_QUEUE_LIFETIME_SECONDS", "-5", NULL},
    {"MAX_SEND_RATE", "-1", NULL},
    {"MAX_SEND_RATE", "abc", NULL},
    {"MAX_SEND_RATE", "inf", NULL},
    {"MAX_SEND_RATE", "nan", NULL},
    {"MAX_SEND_RATE", "1e3", NULL},
    {"MAX_SEND_RATE", "0x10", NULL},
    {"MAX_SEND_RATE", "1.2.3", NULL},
    {"MAX_SEND_RATE", ".", NULL},
    {"MAX_SEND_RATE", "2000000", NULL},
    {"ARNIE_MAX_BATCH", "0", NULL},
    {"ARNIE_MILTER_SOCKET", "tcp:8026@127.0.0.1", NULL},
    {"ARNIE_MILTER_MODE", "forward", NULL},
    {"ARNIE_LOG_FILE", "a\nb", "a?b"},
    {"ARNIE_LOG_FORMAT", "yaml", NULL},
    {"ARNIE_USER", "no body", NULL},
    {"ARNIE_USER", "-rf", NULL},
    {"ARNIE_USER", "user:group", NULL},
    {"ARNIE_METRICS_LISTEN", "localhost:9025", NULL},
    {"ARNIE_METRICS_LISTEN", "127.0.0.1:", NULL},
    {"ARNIE_METRICS_LISTEN", "127.0.0.1:70000", NULL},
    {"ARNIE_METRICS_LISTEN", "::1:9025", NULL},
    {"ARNIE_METRICS_LISTEN", "port", NULL},
    {"HEALTH_MAX_PAUSE_SECONDS", "-1", NULL},
    {"DEFAULT_EXPIRE_AFTER", "15", NULL},
    {"DEFAULT_EXPIRE_AFTER", "1w", NULL},
    {"OUTCOME_COMMAND", "notify-app --sent", NULL},
    {"FALLBACK_AFTER_SECONDS", "-1", NULL},
    {"OUTCOME_COMMAND_TIMEOUT_SECONDS", "0", NULL},
    {"HEALTH_MAX_QUEUE_AGE_SECONDS", "soon", NULL},
};

static void
assert_bad_value(int i)
{
	const char *echo =
	    bad_values[i].echo ? bad_values[i].echo : bad_values[i].value;

	ck_assert_msg(strstr(err, bad_values[i].key) != NULL,
	    "case %d: '%s' does not name %s", i, err, bad_values[i].key);
	ck_assert_msg(strstr(err, echo) != NULL, "case %d: '%s' lacks '%s'", i,
	    err, echo);
	ck_assert_msg(
	    strstr(err, SECRET) == NULL, "case %d: password in '%s'", i, err);
	ck_assert_ptr_null(strchr(err, '\n'));
}

/* Credentials are set too (unless the case is the password file, which may
 * not be combined with a password), so an error that leaked them shows. */
static const char *
credentials(int i)
{
	if (strcmp(bad_values[i].key, "OUTBOUND_EMAIL_PASSWORD_FILE") == 0)
		return "OUTBOUND_EMAIL_USERNAME=u\n";
	return "OUTBOUND_EMAIL_USERNAME=u\nOUTBOUND_EMAIL_PASSWORD=" SECRET
	       "\n";
}

START_TEST(test_bad_value_file)
{
	char text[512];

	snprintf(text, sizeof(text), "%s%s%s='%s'\n", HOSTLINE, credentials(_i),
	    bad_values[_i].key, bad_values[_i].value);
	ck_assert_ptr_null(load_text(text));
	assert_bad_value(_i);
}
END_TEST

START_TEST(test_bad_value_env)
{
	char text[512];

	snprintf(text, sizeof(text), "%s%s", HOSTLINE, credentials(_i));
	setenv(bad_values[_i].key, bad_values[_i].value, 1);
	ck_assert_ptr_null(load_text(text));
	assert_bad_value(_i);
}
END_TEST

/* A value from the file is located; one from the environment says so. */
START_TEST(test_error_location)
{
	char want[PATH_MAX + 32];

	ck_assert_ptr_null(load_text(HOSTLINE "# c\nMAX_RECIPIENTS=abc\n"));
	snprintf(want, sizeof(want),
	    "MAX_RECIPIENTS: 'abc' is not a whole "
	    "number (%s line 3)",
	    envpath);
	ck_assert_str_eq(err, want);
	setenv("MAX_RECIPIENTS", "12x", 1);
	ck_assert_ptr_null(load_text(HOSTLINE "MAX_RECIPIENTS=5\n"));
	ck_assert_str_eq(err, "MAX_RECIPIENTS: '12x' is not a whole number "
	                      "(from the environment)");
}
END_TEST

/* Errors that involve more than one key, or none. */
static const struct {
	const char *text;
	const char *want;
	const char *want2;
} cross_cases[] = {
    {"", "OUTBOUND_EMAIL_HOST is not set", NULL},
    {"OUTBOUND_EMAIL_HOST=\n", "OUTBOUND_EMAIL_HOST is not set", NULL},
    {"OUTBOUND_EMAIL_HOST=''\n", "OUTBOUND_EMAIL_HOST is not set", NULL},
    {"# only a comment\nADMIN_ADDRESS=a@b.example\n",
        "OUTBOUND_EMAIL_HOST is not set", NULL},
    {HOSTLINE "OUTBOUND_EMAIL_HOST_PORT=465\n", "587", "STARTTLS"},
    {HOSTLINE "OUTBOUND_EMAIL_HOST_PORT=465\n", "libesmtp",
        "implicit TLS (SMTPS)"},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n", "OUTBOUND_EMAIL_PASSWORD is not",
        NULL},
    {HOSTLINE "OUTBOUND_EMAIL_PASSWORD=" SECRET "\n",
        "OUTBOUND_EMAIL_USERNAME is not", NULL},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\nOUTBOUND_EMAIL_PASSWORD=" SECRET
              "\nOUTBOUND_EMAIL_PASSWORD_FILE=pw\n",
        "both set", NULL},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
              "OUTBOUND_EMAIL_PASSWORD_FILE=empty\n",
        "OUTBOUND_EMAIL_PASSWORD is not", NULL},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
              "OUTBOUND_EMAIL_PASSWORD_FILE=unreadable-dir\n",
        "OUTBOUND_EMAIL_PASSWORD_FILE", "unreadable-dir"},
    {HOSTLINE "RETRY_DELAY_SECONDS=120\nRETRY_MAX_DELAY_SECONDS=60\n",
        "RETRY_MAX_DELAY_SECONDS", "RETRY_DELAY_SECONDS (120)"},
};

START_TEST(test_cross)
{
	write_file("pw", SECRET "\n");
	write_file("empty", "");
	ck_assert_int_eq(mkdir("unreadable-dir", 0700), 0);
	ck_assert_ptr_null(load_text(cross_cases[_i].text));
	ck_assert_msg(strstr(err, cross_cases[_i].want) != NULL,
	    "case %d: '%s' lacks '%s'", _i, err, cross_cases[_i].want);
	if (cross_cases[_i].want2 != NULL)
		ck_assert_msg(strstr(err, cross_cases[_i].want2) != NULL,
		    "case %d: '%s' lacks '%s'", _i, err, cross_cases[_i].want2);
	ck_assert_ptr_null(strstr(err, SECRET));
}
END_TEST

START_TEST(test_missing_file)
{
	ck_assert_ptr_null(config_load("no-such.env", NULL, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "no-such.env"));
	ck_assert_ptr_nonnull(strstr(err, "cannot open"));
}
END_TEST

START_TEST(test_defaults)
{
	char host[256] = "";
	struct config *cfg = load_text(HOSTLINE);

	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->path, envpath);
	ck_assert_str_eq(cfg->outbound_host, "smtp.example.com");
	ck_assert_int_eq(cfg->outbound_port, 587);
	ck_assert(cfg->use_tls);
	ck_assert(cfg->tls_verify);
	ck_assert_ptr_null(cfg->ca_file);
	ck_assert_ptr_null(cfg->username);
	ck_assert_ptr_null(cfg->password);
	ck_assert_ptr_null(cfg->password_file);
	gethostname(host, sizeof(host) - 1);
	ck_assert_str_eq(cfg->helo_name, host[0] ? host : "localhost");
	ck_assert_ptr_null(cfg->admin_address);
	ck_assert_ptr_null(cfg->report_from);
	ck_assert_int_eq(cfg->report_interval, 3600);
	ck_assert_str_eq(cfg->files_directory, SPOOLDIR);
	ck_assert_str_eq(cfg->spool_directory, SPOOLDIR "/arniefiles");
	ck_assert(!cfg->save_sent_mail);
	ck_assert_str_eq(cfg->listen_address, "127.0.0.1");
	ck_assert_int_eq(cfg->listen_port, 8025);
	ck_assert_uint_eq(cfg->max_message_size, 26214400);
	ck_assert_int_eq(cfg->max_recipients, 100);
	ck_assert_int_eq(cfg->max_connections, 100);
	ck_assert_int_eq(cfg->smtp_timeout, 300);
	ck_assert_int_eq(cfg->smtp_min_data_rate, 500);
	ck_assert(cfg->remove_bcc);
	ck_assert_int_eq(cfg->retry_delay, 60);
	ck_assert_int_eq(cfg->retry_max_delay, 3600);
	ck_assert_int_eq(cfg->max_send_attempts, 50);
	ck_assert_int_eq(cfg->max_queue_lifetime, 432000);
	ck_assert(cfg->max_send_rate == 0.0);
	ck_assert_int_eq(cfg->max_batch, 100);
	ck_assert_int_eq(cfg->send_timeout, 60);
	ck_assert_str_eq(cfg->milter_socket, "inet:8026@127.0.0.1");
	ck_assert_int_eq(cfg->milter_mode, MILTER_DIVERT);
	ck_assert_ptr_null(cfg->log_file);
	ck_assert_str_eq(cfg->user, "arnie");
	ck_assert_int_eq(nwarn, 0);
	config_free(cfg);
}
END_TEST

/* Every key set to a good, non-default value lands in its field. */
START_TEST(test_all_keys)
{
	struct config *cfg;

	write_file("ca.pem", "not checked here\n");
	cfg = load_text(
	    HOSTLINE "OUTBOUND_EMAIL_HOST_PORT=2587\n"
	             "OUTBOUND_EMAIL_USE_TLS=False\n"
	             "OUTBOUND_EMAIL_TLS_VERIFY=no\n"
	             "OUTBOUND_EMAIL_CA_FILE=ca.pem\n"
	             "OUTBOUND_EMAIL_USERNAME=AKIAEXAMPLE\n"
	             "OUTBOUND_EMAIL_PASSWORD=" SECRET "\n"
	             "OUTBOUND_EMAIL_TIMEOUT_SECONDS=30\n"
	             "ARNIE_HOSTNAME=mx.example.com\n"
	             "ADMIN_ADDRESS=admin@example.com\n"
	             "REPORT_FROM=reports@example.com\n"
	             "REPORT_INTERVAL_SECONDS=600\n"
	             "FILES_DIRECTORY=/srv/arnie\n"
	             "SAVE_SENT_MAIL=YES\n"
	             "ARNIE_LISTEN_ADDRESS=::1\n"
	             "ARNIE_LISTEN_PORT=2525\n"
	             "MAX_MESSAGE_SIZE=1048576\n"
	             "MAX_RECIPIENTS=7\n"
	             "MAX_CONNECTIONS=8\n"
	             "ARNIE_SMTP_TIMEOUT_SECONDS=9\n"
	             "ARNIE_SMTP_MIN_DATA_RATE=0\n"
	             "REMOVE_BCC_HEADERS=no\n"
	             "RETRY_DELAY_SECONDS=10\n"
	             "RETRY_MAX_DELAY_SECONDS=10\n"
	             "MAX_SEND_ATTEMPTS=3\n"
	             "MAX_QUEUE_LIFETIME_SECONDS=86400\n"
	             "MAX_SEND_RATE=14\n"
	             "ARNIE_MAX_BATCH=5\n"
	             "ARNIE_MILTER_SOCKET=unix:/run/arnie/milter.sock\n"
	             "ARNIE_MILTER_MODE=copy\n"
	             "ARNIE_LOG_FILE=/var/log/arnie.log\n"
	             "ARNIE_LOG_FORMAT=JSON\n"
	             "ARNIE_USER=mail\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_int_eq(cfg->outbound_port, 2587);
	ck_assert(!cfg->use_tls);
	ck_assert(!cfg->tls_verify);
	ck_assert_str_eq(cfg->ca_file, "ca.pem");
	ck_assert_str_eq(cfg->username, "AKIAEXAMPLE");
	ck_assert_str_eq(cfg->password, SECRET);
	ck_assert_int_eq(cfg->send_timeout, 30);
	ck_assert_str_eq(cfg->helo_name, "mx.example.com");
	ck_assert_str_eq(cfg->admin_address, "admin@example.com");
	ck_assert_str_eq(cfg->report_from, "reports@example.com");
	ck_assert_int_eq(cfg->report_interval, 600);
	ck_assert_str_eq(cfg->spool_directory, "/srv/arnie/arniefiles");
	ck_assert(cfg->save_sent_mail);
	ck_assert_str_eq(cfg->listen_address, "::1");
	ck_assert_int_eq(cfg->listen_port, 2525);
	ck_assert_uint_eq(cfg->max_message_size, 1048576);
	ck_assert_int_eq(cfg->max_recipients, 7);
	ck_assert_int_eq(cfg->max_connections, 8);
	ck_assert_int_eq(cfg->smtp_timeout, 9);
	ck_assert_int_eq(cfg->smtp_min_data_rate, 0);
	ck_assert(!cfg->remove_bcc);
	ck_assert_int_eq(cfg->retry_delay, 10);
	ck_assert_int_eq(cfg->retry_max_delay, 10);
	ck_assert_int_eq(cfg->max_send_attempts, 3);
	ck_assert_int_eq(cfg->max_queue_lifetime, 86400);
	ck_assert(cfg->max_send_rate == 14.0);
	ck_assert_int_eq(cfg->max_batch, 5);
	ck_assert_str_eq(cfg->milter_socket, "unix:/run/arnie/milter.sock");
	ck_assert_int_eq(cfg->milter_mode, MILTER_COPY);
	ck_assert_str_eq(cfg->log_file, "/var/log/arnie.log");
	ck_assert(cfg->log_json);
	ck_assert_str_eq(cfg->user, "mail");
	ck_assert_int_eq(nwarn, 0);
	config_free(cfg);
}
END_TEST

START_TEST(test_report_from_default)
{
	struct config *cfg = load_text(
	    HOSTLINE "ADMIN_ADDRESS=admin@example.com\nMAX_SEND_RATE=0.5\n");

	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->report_from, "admin@example.com");
	ck_assert(cfg->max_send_rate == 0.5);
	config_free(cfg);
}
END_TEST

/* ------------------------------------------------------------ environment */

START_TEST(test_env_wins)
{
	struct config *cfg;

	setenv("MAX_RECIPIENTS", "7", 1);
	setenv("ARNIE_LISTEN_PORT", "9000", 1);
	setenv("OUTBOUND_EMAIL_HOST", "env.example.com", 1);
	setenv("ARNIE_TEST_UNKNOWN", "ignored", 1);
	cfg = load_text(HOSTLINE "MAX_RECIPIENTS=5\nMAX_CONNECTIONS=6\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->outbound_host, "env.example.com");
	ck_assert_int_eq(cfg->max_recipients, 7);
	ck_assert_int_eq(cfg->listen_port, 9000);
	ck_assert_int_eq(cfg->max_connections, 6);
	ck_assert_int_eq(nwarn, 0);
	config_free(cfg);
}
END_TEST

/* An empty variable still wins over the file, and empty means the default
 * (python-dotenv leaves a set variable alone, even an empty one). */
START_TEST(test_env_empty)
{
	struct config *cfg;

	setenv("MAX_RECIPIENTS", "", 1);
	cfg = load_text(HOSTLINE "MAX_RECIPIENTS=5\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_int_eq(cfg->max_recipients, 100);
	config_free(cfg);
}
END_TEST

START_TEST(test_env_only)
{
	struct config *cfg;

	ck_assert_ptr_null(config_load(NULL, warn_cb, err, sizeof(err)));
	ck_assert_str_eq(err, "OUTBOUND_EMAIL_HOST is not set");
	setenv("OUTBOUND_EMAIL_HOST", "relay.internal", 1);
	setenv("SAVE_SENT_MAIL", "on", 1);
	cfg = config_load(NULL, warn_cb, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_ptr_null(cfg->path);
	ck_assert_str_eq(cfg->outbound_host, "relay.internal");
	ck_assert(cfg->save_sent_mail);
	config_free(cfg);
}
END_TEST

START_TEST(test_warn_unknown)
{
	char want[PATH_MAX + 64];
	struct config *cfg;

	cfg = load_text(HOSTLINE "DJANGO_SECRET_KEY=x\nFOO=1\nFOO=2\n"
	                         "OUTBOUND_EMAIL_HOSTT=typo\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_int_eq(nwarn, 3);
	snprintf(want, sizeof(want),
	    "unknown key DJANGO_SECRET_KEY in %s "
	    "line 2",
	    envpath);
	ck_assert_str_eq(warnings[0], want);
	snprintf(want, sizeof(want), "unknown key FOO in %s line 3", envpath);
	ck_assert_str_eq(warnings[1], want);
	snprintf(want, sizeof(want),
	    "unknown key OUTBOUND_EMAIL_HOSTT in %s "
	    "line 5",
	    envpath);
	ck_assert_str_eq(warnings[2], want);
	config_free(cfg);
	/* No callback: unknown keys are still harmless. */
	cfg = config_load(envpath, NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(cfg);
	config_free(cfg);
}
END_TEST

/* ------------------------------------------------------------ paths */

/* "~" stands for the test directory, which is $HOME. */
static const struct {
	const char *value;
	const char *files;
	const char *spool;
} tilde_cases[] = {
    {"~", "~", "~/arniefiles"},
    {"~/", "~", "~/arniefiles"},
    {"~/mail/", "~/mail", "~/mail/arniefiles"},
    {"/srv/arnie//", "/srv/arnie", "/srv/arnie/arniefiles"},
    {"/", "/", "/arniefiles"},
    {"relative/dir", "relative/dir", "relative/dir/arniefiles"},
    {"/a/~/b", "/a/~/b", "/a/~/b/arniefiles"},
};

static void
expand(const char *pattern, char *buf, size_t len)
{
	if (pattern[0] == '~')
		snprintf(buf, len, "%s%s", tmpdir, pattern + 1);
	else
		snprintf(buf, len, "%s", pattern);
}

START_TEST(test_tilde)
{
	char text[512], want[PATH_MAX + 32];
	struct config *cfg;

	snprintf(text, sizeof(text), "%sFILES_DIRECTORY=%s\n", HOSTLINE,
	    tilde_cases[_i].value);
	cfg = load_text(text);
	ck_assert_msg(cfg != NULL, "%s", err);
	expand(tilde_cases[_i].files, want, sizeof(want));
	ck_assert_str_eq(cfg->files_directory, want);
	expand(tilde_cases[_i].spool, want, sizeof(want));
	ck_assert_str_eq(cfg->spool_directory, want);
	config_free(cfg);
}
END_TEST

/* The password file's bytes, and the password Arnie must see. */
static const struct {
	const char *content;
	const char *want;
} pwfile_cases[] = {
    {"filesecret\n", "filesecret"},
    {"crlf\r\n", "crlf"},
    {"no-newline", "no-newline"},
    {"  spaces kept # too\n\n", "  spaces kept # too"},
};

START_TEST(test_password_file)
{
	struct config *cfg;

	write_file("pw", pwfile_cases[_i].content);
	cfg = load_text(HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
	                         "OUTBOUND_EMAIL_PASSWORD_FILE=pw\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->password, pwfile_cases[_i].want);
	ck_assert_str_eq(cfg->password_file, "pw");
	config_free(cfg);
}
END_TEST

/* A file that holds the password and that every user can read gets one
 * warning naming it, its mode and the fix; group-readable (0640 root:arnie,
 * as the package installs it) is fine, and so is a .env without the
 * password. */
static const struct {
	const char *env;  /* the .env's text */
	mode_t env_mode;  /* its mode */
	mode_t pw_mode;   /* the password file's, if the .env names "pw" */
	const char *warn; /* the warning expected, NULL for none */
} readable_cases[] = {
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\nOUTBOUND_EMAIL_PASSWORD=p\n", 0644, 0,
        "holds OUTBOUND_EMAIL_PASSWORD and every user can read it (mode "
        "0644): chmod o-r "},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\nOUTBOUND_EMAIL_PASSWORD=p\n", 0640, 0,
        NULL},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\nOUTBOUND_EMAIL_PASSWORD=p\n", 0604, 0,
        "(mode 0604)"},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
              "OUTBOUND_EMAIL_PASSWORD_FILE=pw\n",
        0644, 0644,
        "pw is OUTBOUND_EMAIL_PASSWORD_FILE and every user can read it "
        "(mode 0644): chmod o-r pw"},
    {HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
              "OUTBOUND_EMAIL_PASSWORD_FILE=pw\n",
        0644, 0640, NULL},
    {HOSTLINE, 0644, 0, NULL},
};

START_TEST(test_readable_secrets)
{
	struct config *cfg;

	if (readable_cases[_i].pw_mode != 0) {
		write_file("pw", "secret\n");
		ck_assert_int_eq(chmod("pw", readable_cases[_i].pw_mode), 0);
	}
	write_file(envpath, readable_cases[_i].env);
	ck_assert_int_eq(chmod(envpath, readable_cases[_i].env_mode), 0);
	cfg = config_load(envpath, warn_cb, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	if (readable_cases[_i].warn == NULL) {
		ck_assert_msg(nwarn == 0, "%s", warnings[0]);
	} else {
		ck_assert_int_eq(nwarn, 1);
		ck_assert_msg(strstr(warnings[0], readable_cases[_i].warn),
		    "%s", warnings[0]);
	}
	config_free(cfg);
}
END_TEST

START_TEST(test_find_file)
{
	char *path, sys[PATH_MAX];

	path = config_find_file("some/arnie.env");
	ck_assert_str_eq(path, "some/arnie.env");
	free(path);
	snprintf(sys, sizeof(sys), "%s/arnie/arnie.env", SYSCONFDIR);
	path = config_find_file(NULL);
	if (access(sys, F_OK) == 0)
		ck_assert_str_eq(path, sys);
	else
		ck_assert_ptr_null(path);
	free(path);
	write_file(".env", HOSTLINE);
	path = config_find_file(NULL);
	ck_assert_str_eq(path, ".env");
	free(path);
}
END_TEST

/* ------------------------------------------------------------ printing */

START_TEST(test_print_masks_password)
{
	char want[128];
	struct config *cfg;
	char *out;
	size_t i;
	int lines = 0;

	cfg = load_text(HOSTLINE "OUTBOUND_EMAIL_USERNAME=u\n"
	                         "OUTBOUND_EMAIL_PASSWORD=" SECRET "\n");
	ck_assert_msg(cfg != NULL, "%s", err);
	out = print_config(cfg);
	ck_assert_ptr_null(strstr(out, SECRET));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nOUTBOUND_EMAIL_PASSWORD=********\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nOUTBOUND_EMAIL_USE_TLS=true\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nSAVE_SENT_MAIL=false\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nARNIE_MILTER_MODE=divert\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nARNIE_LOG_FORMAT=text\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nMAX_SEND_RATE=0\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nADMIN_ADDRESS=\n"));
	/* Every key once, in the documented order, one per line. */
	for (i = 0; out[i] != '\0'; i++)
		lines += out[i] == '\n';
	ck_assert_int_eq(lines, (int)NKEYS);
	{
		const char *p = out;

		for (i = 0; i < NKEYS; i++) {
			snprintf(want, sizeof(want), "%s=", all_keys[i]);
			ck_assert_msg(strncmp(p, want, strlen(want)) == 0,
			    "line %zu is not %s", i, want);
			p = strchr(p, '\n') + 1;
		}
	}
	free(out);
	config_free(cfg);

	cfg = load_text(HOSTLINE);
	ck_assert_ptr_nonnull(cfg);
	out = print_config(cfg);
	ck_assert_ptr_nonnull(strstr(out, "\nOUTBOUND_EMAIL_PASSWORD=\n"));
	free(out);
	config_free(cfg);
}
END_TEST

/* What config_print() writes reads back to the same configuration. */
START_TEST(test_print_round_trip)
{
	struct config *cfg, *again;
	char *out, *out2, *masked;

	cfg = load_text(
	    HOSTLINE "ARNIE_LOG_FILE=\"/var/log/my \\\"arnie\\\" "
	             "log #1\"\nMAX_SEND_RATE=0.25\nARNIE_MILTER_MODE=COPY\n"
	             "OUTBOUND_EMAIL_USERNAME=\"user name\"\n"
	             "OUTBOUND_EMAIL_PASSWORD_FILE=pw\n");
	ck_assert_ptr_null(cfg); /* pw does not exist yet */
	write_file("pw", SECRET);
	cfg = config_load(envpath, warn_cb, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->log_file, "/var/log/my \"arnie\" log #1");
	out = print_config(cfg);
	ck_assert_ptr_null(strstr(out, SECRET));
	/* Comment out the masked password line, then read the output back. */
	masked = strstr(out, "OUTBOUND_EMAIL_PASSWORD=********\n");
	ck_assert_ptr_nonnull(masked);
	masked[0] = '#';
	write_file("again.env", out);
	masked[0] = 'O';
	again = config_load("again.env", warn_cb, err, sizeof(err));
	ck_assert_msg(again != NULL, "%s", err);
	ck_assert_str_eq(again->password, SECRET);
	out2 = print_config(again);
	ck_assert_str_eq(out2, out);
	ck_assert_int_eq(nwarn, 0);
	free(out);
	free(out2);
	config_free(cfg);
	config_free(again);
}
END_TEST

/* ------------------------------------------------------------ booleans */

static const struct {
	const char *text;
	int rc;
	bool value;
} bool_cases[] = {
    {"true", 0, true},
    {"True", 0, true},
    {"TRUE", 0, true},
    {"1", 0, true},
    {"yes", 0, true},
    {"on", 0, true},
    {"false", 0, false},
    {"False", 0, false},
    {"0", 0, false},
    {"no", 0, false},
    {"OFF", 0, false},
    {"", -1, false},
    {"2", -1, false},
    {"truee", -1, false},
    {" true", -1, false},
    {"y", -1, false},
};

static const struct {
	const char *text;
	const char *host; /* NULL: refused */
	int port;
} listens[] = {
    {"9025", "127.0.0.1", 9025},
    {"127.0.0.1:9025", "127.0.0.1", 9025},
    {"0.0.0.0:1", "0.0.0.0", 1},
    {"[::1]:9025", "::1", 9025},
    {"[::]:65535", "::", 65535},
    {"::1:9025", NULL, 0},
    {"[::1]9025", NULL, 0},
    {"host:9025", NULL, 0},
    {"9025x", NULL, 0},
    {":9025", NULL, 0},
    {"0", NULL, 0},
    {"", NULL, 0},
};

START_TEST(test_split_listen)
{
	char host[64] = "";
	int port = -1;
	int rc =
	    config_split_listen(listens[_i].text, host, sizeof(host), &port);

	if (listens[_i].host == NULL) {
		ck_assert_msg(rc == -1, "'%s' accepted", listens[_i].text);
		return;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_str_eq(host, listens[_i].host);
	ck_assert_int_eq(port, listens[_i].port);
}
END_TEST

START_TEST(test_bool)
{
	bool b = !bool_cases[_i].value;

	ck_assert_int_eq(
	    config_parse_bool(bool_cases[_i].text, &b), bool_cases[_i].rc);
	if (bool_cases[_i].rc == 0)
		ck_assert(b == bool_cases[_i].value);
}
END_TEST

START_TEST(test_free_null)
{
	config_free(NULL);
}
END_TEST

#define LOOP(tc, fn, table)                                                    \
	tcase_add_loop_test(tc, fn, 0, (int)(sizeof(table) / sizeof(table[0])))

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_checked_fixture(tc, setup, teardown);
	LOOP(tc, test_parse, parse_cases);
	LOOP(tc, test_bad_line, bad_lines);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_warn_unknown);
	suite_add_tcase(s, tc);

	tc = tcase_create("values");
	tcase_add_checked_fixture(tc, setup, teardown);
	LOOP(tc, test_bad_value_file, bad_values);
	LOOP(tc, test_bad_value_env, bad_values);
	tcase_add_test(tc, test_error_location);
	LOOP(tc, test_cross, cross_cases);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_all_keys);
	tcase_add_test(tc, test_report_from_default);
	LOOP(tc, test_bool, bool_cases);
	LOOP(tc, test_split_listen, listens);
	tcase_add_test(tc, test_free_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("environment");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_env_wins);
	tcase_add_test(tc, test_env_empty);
	tcase_add_test(tc, test_env_only);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_checked_fixture(tc, setup, teardown);
	LOOP(tc, test_tilde, tilde_cases);
	LOOP(tc, test_password_file, pwfile_cases);
	LOOP(tc, test_readable_secrets, readable_cases);
	tcase_add_test(tc, test_find_file);
	tcase_add_test(tc, test_print_masks_password);
	tcase_add_test(tc, test_print_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(config_suite());
}
