/*
 * fuzz_logjson: libFuzzer harness for shared/logjson.c, which turns every
 * log line into JSON, client-supplied addresses and upstream replies
 * included.
 *
 * Input: the first octet picks the buffer size (LOGJSON_MIN_OUT + 4 * n),
 * its low 3 bits how many of the next octets are the program's name; the
 * rest is the line's text.  What must hold, for every input:
 *   - the output is one flat JSON object (string and number values only,
 *     as logjson writes them), then a newline, NUL-terminated, of exactly
 *     the length returned, inside the buffer;
 *   - it is valid UTF-8 with no raw control character;
 *   - it has the keys "time", "level", "program", "pid" and "text".
 */
#include "autoconf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "logjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_logjson: %s:%d: %s\n",       \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

/* A JSON string at *p (moving past it); its content copied to key when
 * key is not NULL (cut to 15 octets). */
static bool
json_string(const char **p, char key[16])
{
	const char *s = *p;
	size_t n = 0;

	if (*s++ != '"')
		return false;
	while (*s != '"') {
		if ((unsigned char)*s < 0x20)
			return false;
		if (*s == '\\') {
			s++;
			if (*s == 'u') {
				int i;

				for (i = 1; i <= 4; i++)
					if (strchr("0123456789abcdefABCDEF",
					        s[i]) == NULL ||
					    s[i] == '\0')
						return false;
				s += 5;
				continue;
			}
			if (strchr("\"\\/bfnrt", *s) == NULL || *s == '\0')
				return false;
		}
		if (key != NULL && n < 15)
			key[n++] = *s;
		s++;
	}
	if (key != NULL)
		key[n] = '\0';
	*p = s + 1;
	return true;
}

static bool
json_number(const char **p)
{
	const char *s = *p;

	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (*s >= '0' && *s <= '9')
			s++;
	else
		return false;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	*p = s;
	return true;
}

/* Valid UTF-8, no raw control character but the final newline. */
static bool
clean_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0, k, j;

	while (i < n) {
		if (s[i] < 0x80) {
			if (s[i] < 0x20 && !(s[i] == '\n' && i == n - 1))
				return false;
			i++;
			continue;
		}
		if (s[i] >= 0xc2 && s[i] <= 0xdf)
			k = 2;
		else if (s[i] >= 0xe0 && s[i] <= 0xef)
			k = 3;
		else if (s[i] >= 0xf0 && s[i] <= 0xf4)
			k = 4;
		else
			return false;
		if (i + k > n)
			return false;
		for (j = 1; j < k; j++)
			if (s[i + j] < 0x80 || s[i + j] > 0xbf)
				return false;
		/* Overlong, surrogate and beyond U+10FFFF forms. */
		if ((s[i] == 0xe0 && s[i + 1] < 0xa0) ||
		    (s[i] == 0xed && s[i + 1] > 0x9f) ||
		    (s[i] == 0xf0 && s[i + 1] < 0x90) ||
		    (s[i] == 0xf4 && s[i + 1] > 0x8f))
			return false;
		i += k;
	}
	return true;
}

static void
check_object(const char *out)
{
	static const char *const need[] = {"time", "level", "program", "pid",
	    "text"};
	bool have[5] = {false};
	const char *p = out;
	char key[16];
	size_t i;

	CHECK(*p++ == '{');
	for (;;) {
		CHECK(json_string(&p, key));
		for (i = 0; i < 5; i++)
			if (strcmp(key, need[i]) == 0)
				have[i] = true;
		CHECK(*p++ == ':');
		if (*p == '"')
			CHECK(json_string(&p, NULL));
		else
			CHECK(json_number(&p));
		if (*p == '}')
			break;
		CHECK(*p++ == ',');
	}
	CHECK(strcmp(p, "}\n") == 0);
	for (i = 0; i < 5; i++)
		CHECK(have[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[LOGJSON_MIN_OUT + 255 * 4 + 16];
	char program[8];
	size_t outlen, len, plen;
	char *text;

	if (size == 0)
		return 0;
	outlen = LOGJSON_MIN_OUT + (size_t)data[0] * 4;
	plen = data[0] & 7;
	if (plen > size - 1)
		plen = size - 1;
	memcpy(program, data + 1, plen);
	program[plen] = '\0';
	text = malloc(size);
	memcpy(text, data + 1 + plen, size - 1 - plen);
	text[size - 1 - plen] = '\0';
	/* A canary past the buffer given. */
	memset(out, 'Z', sizeof(out));
	len = logjson_format(out, outlen, "2026-12-02T06:30:00.123Z",
	    LOG_INFO, program, 1234, text);
	CHECK(len < outlen);
	CHECK(out[len] == '\0' && strlen(out) == len);
	CHECK(out[outlen] == 'Z');
	CHECK(clean_utf8((const unsigned char *)out, len));
	check_object(out);
	free(text);
	return 0;
}
