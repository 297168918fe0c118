/*
 * fuzz_wire: libFuzzer harness for shared/wire.c's record parser, which
 * reads everything the relay program says to the daemon.
 *
 * Input: one received record, as is.  What must hold:
 *   - wire_parse() fails only with EBADMSG, and then leaves no fields;
 *   - a parsed record re-encodes to exactly the input (header, lengths,
 *     fields back to back), so nothing was skipped or invented;
 *   - each field is NUL-terminated in the record's buffer, and
 *     wire_text() gives it exactly when it holds no NUL octet;
 *   - wire_number() accepts exactly 1 to 20 decimal digits whose value
 *     fits the limit, and agrees with a plain reading of them.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_wire: %s:%d: %s\n",          \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

static struct wire_rec rec;

/* The value of s[0..len) as digits, by the book; -1 when it is not one. */
static int
plain_number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	unsigned __int128 v = 0;
	size_t i;

	if (len == 0 || len > 20)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static void
check_fields(const uint8_t *data, size_t size)
{
	uint32_t word;
	size_t i, off = (3 + rec.n) * sizeof(uint32_t);
	uint64_t a, b, max;

	memcpy(&word, data + 4, 4);
	CHECK(word == rec.type);
	for (i = 0; i < rec.n; i++) {
		memcpy(&word, data + 12 + 4 * i, 4);
		CHECK(word == rec.len[i]);
		CHECK(off + rec.len[i] <= size);
		CHECK(memcmp(rec.field[i], data + off, rec.len[i]) == 0);
		CHECK(rec.field[i][rec.len[i]] == '\0');
		CHECK((wire_text(&rec, i) != NULL) ==
		      (memchr(rec.field[i], '\0', rec.len[i]) == NULL));
		/* Limits from the input too, so that both edges get tried:
		 * odd lengths a small one, even lengths none. */
		max = rec.len[i] % 2 == 1
		          ? (uint64_t)(unsigned char)rec.field[i][0] * 1000003u
		          : UINT64_MAX;
		a = b = 0;
		CHECK((wire_number(&rec, i, max, &a) == 0) ==
		      (plain_number(rec.field[i], rec.len[i], max, &b) == 0));
		CHECK(a == b);
		off += rec.len[i];
	}
	CHECK(off == size);
	CHECK(wire_text(&rec, rec.n) == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	errno = 0;
	if (wire_parse((const char *)data, size, &rec) == -1) {
		CHECK(errno == EBADMSG);
		CHECK(rec.n == 0);
		return 0;
	}
	CHECK(size >= 12);
	CHECK(rec.n <= WIRE_FIELDS_MAX);
	check_fields(data, size);
	return 0;
}
