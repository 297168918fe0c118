/*
 * fuzz_stats: libFuzzer harness for stats_parse(), which reads the
 * sender.status file (arnie-queue stats, /metrics of a process that does
 * not relay).  What must hold, for every input:
 *   - stats_parse() never crashes and either refuses (EBADMSG) or fills
 *     the struct;
 *   - what it accepted, written again by stats_format(), parses again to
 *     the same figures.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_stats: %s:%d: %s\n",         \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stats st, again;
	char *text = malloc(size + 1), *out;
	size_t i;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	errno = 0;
	if (stats_parse(text, &st) == -1) {
		CHECK(errno == EBADMSG);
		free(text);
		return 0;
	}
	out = stats_format(&st, st.pid, st.written);
	CHECK(stats_parse(out, &again) == 0);
	CHECK(again.pid == st.pid && again.written == st.written);
	CHECK(again.paused == st.paused);
	CHECK(again.last_delivery == st.last_delivery);
	for (i = 0; i < STATS_NEVENTS; i++)
		CHECK(again.total[i] == st.total[i]);
	free(out);
	free(text);
	return 0;
}
