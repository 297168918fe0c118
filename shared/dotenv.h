/*
 * dotenv: a .env file in python-dotenv's dialect, read into KEY=VALUE
 * entries, the original Arnie's configuration format.
 *
 * One entry per line (a quoted value may span lines):
 *	[export ]KEY = VALUE
 *	'single'	taken literally
 *	"double"	\n \r \t \" \\ decoded, any other backslash kept
 *	unquoted	to the end of the line, trimmed; whitespace then '#'
 *			starts a comment, so a '#' inside a word is kept
 * Blank lines and lines whose first non-blank character is '#' are skipped.
 * Keys are letters, digits, '_', '.' and '-', not starting with a digit.
 *
 * Knows nothing of Arnie's keys: config.c gives meaning to the entries.
 * Never logs; errors are one line naming the file and line, and the key
 * of a line that has its '=' (a quoted value never closed, text after
 * one); a word with no '=' after it is named only when the caller's
 * known() says it is a key, since it may be the wrapped tail of the
 * password line.  Values are never echoed; every value and the file's
 * buffer are wiped before they are freed.
 */
#ifndef ARNIE_DOTENV_H
#define ARNIE_DOTENV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A file bigger than this is not a configuration file. */
#define DOTENV_MAX (1024 * 1024)

/* One KEY=VALUE of the file, in file order; a later duplicate wins. */
struct dotenv_entry {
	char *key;
	char *value; /* wiped when freed */
	int line;
};

/* Start from a zeroed struct; release with dotenv_clear(). */
struct dotenv {
	const char *path; /* borrowed, for messages */
	mode_t mode;      /* of the file, set by dotenv_read() */
	struct dotenv_entry *v;
	size_t n, cap;
};

typedef bool dotenv_known_fn(const char *key);

/* Read and parse the file at path (see the top comment).  0, or -1 with
 * the reason in err (the entries before a malformed line are kept). */
int dotenv_read(struct dotenv *ef, const char *path, dotenv_known_fn *known,
    char *err, size_t errlen);
/* Parse buf[0..len) as the file ef->path holds. */
int dotenv_parse(struct dotenv *ef, const char *buf, size_t len,
    dotenv_known_fn *known, char *err, size_t errlen);
/* The value of key's last occurrence, its line in *line (if not NULL);
 * NULL when the file does not set it. */
const char *dotenv_get(const struct dotenv *ef, const char *key, int *line);
/* Free (wipe) every entry; ef may be read into again. */
void dotenv_clear(struct dotenv *ef);

#endif
