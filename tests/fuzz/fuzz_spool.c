/*
 * fuzz_spool: libFuzzer harness for envelope_parse() (shared/spool.c).
 *
 * A spool file comes from outside the process: operators and other tools
 * drop files into outbox/, and a disk or a crash can cut one short.  The
 * input is taken as a whole spool file.  What must hold:
 *   - envelope_parse() never crashes and fails only with EBADMSG;
 *   - an envelope that parses is consistent: at least one recipient, a
 *     valid ID, body_offset inside the file and size = the octets after it;
 *   - round trip: envelope_format() of it, followed by the same message,
 *     parses again to the same envelope, and formats to the same text.
 * A broken property aborts, so that libFuzzer keeps the input.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_spool: %s:%d: %s\n",         \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

static bool
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_same(const struct envelope *a, const struct envelope *b)
{
	size_t i;

	CHECK(strcmp(a->id, b->id) == 0);
	CHECK(same_str(a->sender, b->sender));
	CHECK(a->nrcpts == b->nrcpts);
	for (i = 0; i < a->nrcpts; i++) {
		CHECK(strcmp(a->rcpts[i].addr, b->rcpts[i].addr) == 0);
		CHECK(a->rcpts[i].state == b->rcpts[i].state);
		CHECK(same_str(a->rcpts[i].reply, b->rcpts[i].reply));
	}
	CHECK(a->created == b->created);
	CHECK(a->attempts == b->attempts);
	CHECK(a->next_attempt == b->next_attempt);
	CHECK(same_str(a->last_reply, b->last_reply));
	CHECK(same_str(a->origin, b->origin));
	CHECK(a->size == b->size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct envelope *env = NULL, *env2 = NULL;
	char *hdr = NULL, *hdr2 = NULL, *file = NULL;
	size_t hlen, hlen2, body;

	errno = 0;
	if (envelope_parse(text, size, &env) == -1) {
		CHECK(errno == EBADMSG);
		return 0;
	}
	CHECK(env != NULL);
	CHECK(env->nrcpts > 0);
	CHECK(spool_id_time(env->id) != -1);
	CHECK(env->sender != NULL);
	CHECK(env->body_offset > 0 && (size_t)env->body_offset <= size);
	body = size - (size_t)env->body_offset;
	CHECK(env->size == body);

	hdr = envelope_format(env, &hlen);
	CHECK(hdr != NULL && strlen(hdr) == hlen);
	file = malloc(hlen + body + 1);
	CHECK(file != NULL);
	memcpy(file, hdr, hlen);
	memcpy(file + hlen, text + env->body_offset, body);
	CHECK(envelope_parse(file, hlen + body, &env2) == 0);
	check_same(env, env2);
	CHECK((size_t)env2->body_offset == hlen);

	/* The format is canonical: a second trip changes nothing. */
	hdr2 = envelope_format(env2, &hlen2);
	CHECK(hlen2 == hlen && memcmp(hdr, hdr2, hlen) == 0);

	free(hdr2);
	free(file);
	free(hdr);
	envelope_free(env2);
	envelope_free(env);
	return 0;
}
