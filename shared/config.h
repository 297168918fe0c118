/*
 * config: Arnie's settings, read from a .env-style file and the environment.
 *
 * The file holds KEY=VALUE lines, '#' comments, blank lines, values in single
 * or double quotes, and an optional leading "export ".  A variable set in the
 * process environment wins over the file, as with python-dotenv, so an
 * existing Arnie .env works unchanged.  Every key, its default and its
 * meaning are listed in docs/configuration.md.
 *
 * config_load() never exits and never logs: on a bad value it returns NULL
 * and a message naming the key, and the caller exits with EX_CONFIG (78).
 * Unknown keys in the file are reported through the warning callback (they
 * are harmless: an application's own .env may hold them), and so is a file
 * that holds the password (the .env with OUTBOUND_EMAIL_PASSWORD, or
 * OUTBOUND_EMAIL_PASSWORD_FILE) and that every user may read.  The password is
 * kept only in memory, wiped on config_free(), and config_print() masks it.
 */
#ifndef ARNIE_CONFIG_H
#define ARNIE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum milter_mode {
	MILTER_DIVERT, /* commit, then SMFIS_DISCARD */
	MILTER_COPY,   /* commit, then SMFIS_ACCEPT */
};

struct config {
	char *path; /* the file read, or NULL if none */

	/* Upstream smarthost. */
	char *outbound_host; /* OUTBOUND_EMAIL_HOST, required */
	int outbound_port;   /* OUTBOUND_EMAIL_HOST_PORT, 587 */
	bool use_tls;    /* OUTBOUND_EMAIL_USE_TLS, true: STARTTLS required */
	bool tls_verify; /* OUTBOUND_EMAIL_TLS_VERIFY, true */
	char *ca_file;   /* OUTBOUND_EMAIL_CA_FILE, NULL */
	char *username;  /* OUTBOUND_EMAIL_USERNAME, NULL = no AUTH */
	char *password;  /* OUTBOUND_EMAIL_PASSWORD(_FILE); secret */
	char *password_file; /* OUTBOUND_EMAIL_PASSWORD_FILE, NULL */

	/* The fallback upstream: the same keys with FALLBACK_ for
	 * OUTBOUND_; used while the primary has been paused for
	 * FALLBACK_AFTER_SECONDS.  fb_host NULL: none. */
	char *fb_host;
	int fb_port;
	bool fb_use_tls;
	bool fb_tls_verify;
	char *fb_ca_file;
	char *fb_username;
	char *fb_password; /* secret */
	char *fb_password_file;
	long fallback_after; /* FALLBACK_AFTER_SECONDS, 300 */
	char *helo_name;     /* ARNIE_HOSTNAME, gethostname() */

	/* Reports. */
	char *admin_address;  /* ADMIN_ADDRESS, NULL = no reports */
	char *report_from;    /* REPORT_FROM, ADMIN_ADDRESS */
	long report_interval; /* REPORT_INTERVAL_SECONDS, 3600 */

	/* Spool. */
	char *files_directory;   /* FILES_DIRECTORY, "~" expanded */
	char *spool_directory;   /* files_directory + "/arniefiles" */
	bool save_sent_mail;     /* SAVE_SENT_MAIL, false */
	int sent_retention_days; /* SENT_RETENTION_DAYS, 0 = forever */

	/* Listener (standalone). */
	char *listen_address;    /* ARNIE_LISTEN_ADDRESS, 127.0.0.1 */
	int listen_port;         /* ARNIE_LISTEN_PORT, 8025 */
	size_t max_message_size; /* MAX_MESSAGE_SIZE, 26214400 */
	int max_recipients;      /* MAX_RECIPIENTS, 100 */
	int max_connections;     /* MAX_CONNECTIONS, 100 */
	bool remove_bcc;   /* REMOVE_BCC_HEADERS, true (both front-ends) */
	long smtp_timeout; /* ARNIE_SMTP_TIMEOUT_SECONDS, 300 */
	long smtp_min_data_rate; /* ARNIE_SMTP_MIN_DATA_RATE octets/s, 500 */

	/* Sender and retries. */
	long retry_delay;        /* RETRY_DELAY_SECONDS, 60 */
	long retry_max_delay;    /* RETRY_MAX_DELAY_SECONDS, 3600 */
	int max_send_attempts;   /* MAX_SEND_ATTEMPTS, 50 */
	long max_queue_lifetime; /* MAX_QUEUE_LIFETIME_SECONDS, 432000 */
	long default_expire;     /* DEFAULT_EXPIRE_AFTER seconds, 0 = never */
	long dedup_window;       /* DEDUP_WINDOW_SECONDS, 0 = off */
	char *outcome_command;   /* OUTCOME_COMMAND, NULL = none (hooks.h) */
	long outcome_timeout;    /* OUTCOME_COMMAND_TIMEOUT_SECONDS, 10 */
	char *alert_command;     /* ALERT_COMMAND, NULL = none (alert.h) */
	long alert_timeout;      /* ALERT_COMMAND_TIMEOUT_SECONDS, 10 */
	long alert_after;        /* ALERT_AFTER_SECONDS, 300 */
	long alert_queue_age;    /* ALERT_QUEUE_AGE_SECONDS, 3600, 0 = off */
	double max_send_rate;    /* MAX_SEND_RATE msg/s, 0 = unlimited */
	int max_batch;           /* ARNIE_MAX_BATCH messages/connection, 100 */
	long send_timeout;       /* OUTBOUND_EMAIL_TIMEOUT_SECONDS, 60 */

	/* Milter. */
	char *milter_socket; /* ARNIE_MILTER_SOCKET, inet:8026@127.0.0.1 */
	enum milter_mode milter_mode; /* ARNIE_MILTER_MODE, divert */

	/* Logging. */
	char *log_file; /* ARNIE_LOG_FILE, NULL = standard error,
	                 * "syslog" = syslog(3) */
	bool log_json;  /* ARNIE_LOG_FORMAT=json */

	/* Process. */
	char *user;          /* ARNIE_USER, "arnie": who a daemon started
	                      * as root becomes */
	char *relay_program; /* ARNIE_RELAY_PROGRAM, the installed
	                      * arnie-relay */
	long relay_idle;     /* ARNIE_RELAY_IDLE_SECONDS: the relay
	                      * program exits after this long without a
	                      * session; 0: it stays */

	/* Monitoring (monitor.h). */
	char *metrics_listen;      /* ARNIE_METRICS_LISTEN, NULL = off */
	long health_max_pause;     /* HEALTH_MAX_PAUSE_SECONDS, 600 */
	long health_max_queue_age; /* HEALTH_MAX_QUEUE_AGE_SECONDS, 3600 */
};

typedef void config_warn_fn(const char *message);

/* cfg as the fallback upstream's relay sees it: a shallow copy with the
 * FALLBACK_ values in the OUTBOUND_ fields (borrowed from cfg; never
 * config_free() it). */
void config_fallback_view(const struct config *cfg, struct config *view);

/* ARNIE_METRICS_LISTEN's "[HOST:]PORT" ("[V6]:PORT" for IPv6; HOST
 * 127.0.0.1 when left out): 0, or -1 when it is not one. */
int config_split_listen(
    const char *text, char *host, size_t hostlen, int *port);

/*
 * Find the file to read: cli_path if given (returned as is; config_load()
 * reports it if it does not exist), else ./.env if present, else
 * SYSCONFDIR/arnie/arnie.env if present, else NULL (settings from the
 * environment only).  Returns an owned string or NULL.
 */
char *config_find_file(const char *cli_path);

/*
 * Read path (NULL: environment only), apply defaults, validate.
 * Returns an owned config, or NULL with a one-line message in err naming the
 * offending key (e.g. "OUTBOUND_EMAIL_HOST is not set").  warn, if not NULL,
 * is called once for each unknown key.
 */
struct config *config_load(
    const char *path, config_warn_fn *warn, char *err, size_t errlen);

/* Print the effective configuration, one KEY=VALUE a line, password masked. */
void config_print(const struct config *cfg, FILE *out);

/* Release cfg, wiping the password.  NULL is accepted. */
void config_free(struct config *cfg);

/* Parse a boolean as the original did: true/false, 1/0, yes/no, on/off.
 * Returns 0 and sets *out, or -1 if the text is none of those. */
int config_parse_bool(const char *text, bool *out);

#endif
