/*
 * fuzz_config: libFuzzer harness for the .env reader (shared/dotenv.c) and
 * shared/config.c behind it.
 *
 * The input is a whole .env file, written to a temporary file and read
 * with config_load(), as the daemons do; dotenv_parse() tells the harness
 * which value the file gives OUTBOUND_EMAIL_PASSWORD.  What must hold:
 *   - config_load() never crashes; it returns a config or NULL with a
 *     non-empty one-line message in err;
 *   - the password never reaches err: when the file sets the password to
 *     8 octets or more and err holds them, the load is repeated with the
 *     password taken from the environment instead (same length, other
 *     octets); if err still holds the file's value, that text came from
 *     elsewhere (another key's value, the path) and is not a leak;
 *     otherwise it is one, and the harness aborts.
 * The process environment must not set any of Arnie's keys.
 */
#include "autoconf.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "dotenv.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_config: %s:%d: %s\n",        \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

#define PW_KEY "OUTBOUND_EMAIL_PASSWORD"
#define PW_MIN 8

static char tmp_path[64];
static int tmp_fd = -1;

static void
write_file(const uint8_t *data, size_t size)
{
	size_t off = 0;
	ssize_t w;

	if (tmp_fd == -1) {
		snprintf(tmp_path, sizeof(tmp_path), "/tmp/fuzz_config.XXXXXX");
		tmp_fd = mkstemp(tmp_path);
		CHECK(tmp_fd != -1);
	}
	CHECK(ftruncate(tmp_fd, 0) == 0);
	while (off < size) {
		w = pwrite(tmp_fd, data + off, size - off, (off_t)off);
		CHECK(w > 0);
		off += (size_t)w;
	}
}

static void
ignore_warning(const char *message)
{
	CHECK(message != NULL && strchr(message, '\n') == NULL);
}

/* The password the file sets (its last occurrence wins), or NULL. */
static char *
file_password(const uint8_t *data, size_t size)
{
	struct dotenv ef = {0};
	char err[256];
	char *pw = NULL;
	size_t i;

	ef.path = tmp_path;
	/* A file config_load() refuses whole gives no password at all. */
	if (memchr(data, '\0', size) != NULL)
		return NULL;
	/* dotenv_parse() stops at a bad line, keeping what it read before. */
	(void)dotenv_parse(&ef, (const char *)data, size, NULL, err,
	    sizeof(err));
	for (i = ef.n; i-- > 0;)
		if (strcmp(ef.v[i].key, PW_KEY) == 0) {
			pw = strdup(ef.v[i].value);
			break;
		}
	dotenv_clear(&ef);
	return pw;
}

/* Run config_load() on the file; true if it failed. */
static bool
load(char *err, size_t errlen)
{
	struct config *cfg;

	cfg = config_load(tmp_path, ignore_warning, err, errlen);
	if (cfg == NULL) {
		CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
		return true;
	}
	config_free(cfg);
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512], err2[512];
	char *pw, *other;
	size_t i, n;

	if (size > DOTENV_MAX)
		return 0;
	write_file(data, size);
	if (!load(err, sizeof(err)))
		return 0;
	if ((pw = file_password(data, size)) == NULL)
		return 0;
	n = strlen(pw);
	if (n < PW_MIN || strstr(err, pw) == NULL) {
		free(pw);
		return 0;
	}
	/* Same length, no octet in common: a value of its own. */
	other = strdup(pw);
	CHECK(other != NULL);
	for (i = 0; i < n; i++)
		other[i] = pw[i] == 'Q' ? 'Z' : 'Q';
	CHECK(setenv(PW_KEY, other, 1) == 0);
	(void)load(err2, sizeof(err2));
	CHECK(unsetenv(PW_KEY) == 0);
	if (strstr(err2, pw) == NULL) {
		fprintf(stderr,
		    "fuzz_config: the password reached the error message: %s\n",
		    err);
		abort();
	}
	free(other);
	free(pw);
	return 0;
}
